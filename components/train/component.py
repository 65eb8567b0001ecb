"""KFP component: train a zoo or user model and export it to ONNX (parity-checked)."""

from kfp import dsl

from edgecompress.settings import component_image
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig
from edgecompress.zoo import ModelChoice

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (
    ModelChoice,
    TrainConfig,
    Lineage,
)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train(
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    model_spec: str = "cnn",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.003,
    weight_decay: float = 0.0001,
    seed: int = 0,
    augment: bool = False,
    label_smoothing: float = 0.0,
    max_train_samples: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """`model_spec`: a zoo family (mlp, lenet5, cnn, mobilenet), `package.module:factory`, or a JSON spec.
    `max_train_samples` 0 trains on the whole training split."""
    from edgecompress.components import stamp_model
    from edgecompress.params import build
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step
    from edgecompress.zoo import ModelChoice

    info = train_step(dataset.path, build(ModelChoice, locals()).model_spec, model.path,
                      build(TrainConfig, locals()), build(Lineage, locals()), progress=False)  # fmt: skip
    stamp_model(model, info)
