"""KFP component: train a zoo or user model and export it to ONNX (parity-checked)."""

from edgecompress.components import stamp_model
from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig, train_step
from edgecompress.zoo import ModelChoice

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    ModelChoice,
    TrainConfig,
    Lineage,
)


def run(dataset, model, **settings) -> None:
    spec = build(ModelChoice, settings).model_spec
    result = train_step(
        dataset.path, spec, model.path, build(TrainConfig, settings), build(Lineage, settings), progress=False
    )
    stamp_model(model, result)


train = technique_component(
    "train",
    run,
    inputs={"dataset": "Dataset"},
    outputs={"model": "Model"},
    surfaces=SURFACES,
    doc="""`model_spec`: a zoo family (mlp, lenet5, cnn, mobilenet), `package.module:factory`, or a JSON spec.
    `max_train_samples` 0 trains on the whole training split.""",
)
