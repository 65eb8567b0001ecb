"""KFP component: train a zoo or user model and export it to ONNX (parity-checked)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train(
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    model_spec: str = "cnn",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    augment: bool = False,
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """`model_spec`: a zoo family (mlp, lenet5, cnn, mobilenet), `package.module:factory`, or a JSON spec."""
    from edgecompress.step import Lineage
    from edgecompress.steps import train_step
    from edgecompress.train import TrainConfig

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment, seed=seed
    )
    info = train_step(
        dataset.path,
        model_spec,
        model.path,
        config,
        Lineage(pipeline_run_id, pipeline_name, experiment, track),
        progress=False,
    )
    model.metadata.update(
        {k: info.get(k) for k in ("technique", "params", "onnx_bytes", "onnx_sha256", "dataset_sha256")}
    )
    model.metadata["mlflow_model_id"] = info.get("mlflow_model_id") or ""
    model.metadata["parent_model_id"] = ""
