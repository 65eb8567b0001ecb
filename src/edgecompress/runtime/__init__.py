"""The runtime core: what measures and runs a model on a device class, used by the farm (a service
above it), the techniques and the CLI alike. The device vocabulary (`devices`: profiles, emulated
classes, defaults, names), facts read on the device (`facts`), the benchmark runner (`runner`, its
model check in the child: `modelcheck`, its forkserver preload: `_preload`), logits on this machine's
ONNX Runtime (`logits`), the executors that benchmark on an emulated class or on this device
(`executor`), profile checks against a device's CPU features (`profilecheck`) and latency measurement
on this machine (`measure`).

Contract: importing a module here never imports the farm, a technique or an adapter, and the runner,
logits, executor and facts need only ONNX Runtime and numpy (the arm64 and Jetson agent images have
no torch). This package's `__init__` imports nothing."""
