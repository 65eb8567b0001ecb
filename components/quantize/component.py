"""KFP component: quantize a model (static/dynamic INT8, FP16, mixed precision or QAT) and check it
against its parent."""

from edgecompress.components.factory import technique_component
from edgecompress.edge import Measurement
from edgecompress.quantize import QuantConfig
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (QuantConfig, Measurement, Lineage)


def run(model, dataset, quantized_model, check, **settings) -> None:
    from edgecompress.components import stamp_model
    from edgecompress.params import build
    from edgecompress.quantize import quantize_step

    result = quantize_step(
        model.path,
        dataset.path,
        quantized_model.path,
        build(QuantConfig, settings),
        build(Lineage, settings),
        build(Measurement, settings),
    )
    info = result.info
    stamp_model(quantized_model, result, top1_agreement=info["parent_agreement"]["top1_agreement"])
    for key, value in info["parent_agreement"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            check.log_metric(key, value)


quantize = technique_component(
    "quantize",
    run,
    inputs={"model": "Model", "dataset": "Dataset"},
    outputs={"quantized_model": "Model", "check": "Metrics"},
    surfaces=SURFACES,
    doc="""`method`: static | dynamic | fp16 | mixed | qat. Calibration samples are a seeded draw from the
    training split. `reduce_range`: auto (7-bit weights on x86 CPUs without VNNI) | on | off.
    `target_accuracy` < 0 and `qat_max_train_samples` = 0 mean unset. `check` holds the comparison with
    the parent on the validation split and the latency on `device_class` (empty: not measured).""",
)
