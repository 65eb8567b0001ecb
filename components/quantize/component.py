"""KFP component: quantize a model (static/dynamic INT8, FP16, mixed precision or QAT) and check it
against its parent."""

from kfp import dsl

from edgecompress.measure import Measurement
from edgecompress.quantize import QuantConfig
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (QuantConfig, Measurement, Lineage)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def quantize(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    quantized_model: dsl.Output[dsl.Model],
    check: dsl.Output[dsl.Metrics],
    method: str = "static",
    calibration_samples: int = 256,
    calibration_method: str = "minmax",
    quant_format: str = "qdq",
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    reduce_range: str = "auto",
    nodes_to_exclude: str = "",
    seed: int = 0,
    mixed_exclude: int = 0,
    target_accuracy: float = -1.0,
    probe_samples: int = 1000,
    qat_epochs: int = 2,
    qat_lr: float = 0.0001,
    qat_batch_size: int = 128,
    qat_max_train_samples: int = 0,
    qat_distill: float = 0.5,
    device_class: str = "rpi4-emulated",
    farm_url: str = "",
    bench_min_runs: int = 200,
    bench_min_duration_s: float = 1.0,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """`method`: static | dynamic | fp16 | mixed | qat. Calibration samples are a seeded draw from the
    training split. `reduce_range`: auto (7-bit weights on x86 CPUs without VNNI) | on | off.
    `target_accuracy` < 0 and `qat_max_train_samples` = 0 mean unset. `check` holds the comparison with
    the parent on the validation split and the latency on `device_class` (empty: not measured)."""
    from edgecompress.components import stamp_model
    from edgecompress.measure import Measurement
    from edgecompress.params import build
    from edgecompress.quantize import QuantConfig, quantize_step
    from edgecompress.step import Lineage

    info = quantize_step(model.path, dataset.path, quantized_model.path, build(QuantConfig, locals()),
                         build(Lineage, locals()), build(Measurement, locals()))  # fmt: skip
    stamp_model(quantized_model, info, top1_agreement=info["parent_agreement"]["top1_agreement"])
    for key, value in info["parent_agreement"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            check.log_metric(key, value)
