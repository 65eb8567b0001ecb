"""Pruning: unstructured magnitude pruning and structured channel pruning.

- **Unstructured** (`torch.nn.utils.prune`): zeroes the smallest weights, globally or per layer, and
  makes the zeros permanent. The tensors keep their shape, so a dense kernel does exactly the same
  work: there is *no* speed-up from sparsity on ONNX Runtime's dense CPU kernels. What shrinks is
  the artifact once compressed (gzip bytes — what is shipped over the air).
- **Structured** (torch-pruning's dependency graph): removes whole channels/filters, so the
  convolutions, BatchNorms, residual additions, concatenations, depthwise convolutions and the
  flatten→Linear boundary that depend on them shrink consistently. The exported ONNX has fewer MACs
  and runs faster. Importance: L1, L2, BatchNorm scale or first-order Taylor. Target: a ratio, or a
  budget (MACs, parameters, or measured latency on a device class). An iterative schedule prunes in
  steps with (seeded) fine-tuning between and after.
- **Sensitivity analysis**: accuracy against the pruning ratio of each layer alone, no fine-tuning;
  `suggest_layer_ratios` turns it into per-layer ratios.
"""

from edgecompress.prune.common import parse_layer_ratios, parse_names, parse_ratios

# `edgecompress.prune.sensitivity` is the function from here on (it shadows its submodule's name); the
# module is `sys.modules["edgecompress.prune.sensitivity"]`.
from edgecompress.prune.sensitivity import sensitivity, sensitivity_png, suggest_layer_ratios
from edgecompress.prune.step import PruneConfig, prune_step
from edgecompress.prune.structured import StructuredConfig, prune_structured
from edgecompress.prune.unstructured import UnstructuredConfig, prune_unstructured

__all__ = [
    "StructuredConfig",
    "UnstructuredConfig",
    "parse_layer_ratios",
    "parse_names",
    "parse_ratios",
    "PruneConfig",
    "prune_step",
    "prune_structured",
    "prune_unstructured",
    "sensitivity",
    "sensitivity_png",
    "suggest_layer_ratios",
]
