"""Capture the dataflow of any ``nn.Module`` as a raw operation graph, the first step of :func:`archspace.to_graph`.

One forward pass runs under a :class:`torch.overrides.TorchFunctionMode` that sees every torch function and tensor
method, by default on ``meta`` tensors: the model's parameters and buffers are swapped for empty meta tensors for
the duration of the pass and put back afterwards (nothing is allocated, no value changes). Each tensor is mapped
to the raw node that produced it; parameters are recognised by tensor identity. The rules follow the reference
graph builder of GHN-2 (``ppuda/deepnets1m/graph.py``, Knyazev et al., NeurIPS 2021, Sec. 4.1), which walks
autograd: a parameter consumed by an op together with activations gives a node (conv/linear weight, then a
separate bias node; one node for a norm layer's weight and bias); parameter-free ops give a node kept or dropped
by :data:`archspace.primitives.FUNCTION_PRIMITIVES`; tensors without a path from the input or a parameter
(constants, masks, integer indices) are not followed.

Unlike the reference it does not depend on autograd node offsets, and it reads the operations rather than the
module names:

- *free* parameters (owned by no layer type of :mod:`archspace.primitives`: layer scales, class tokens, position
  embeddings, relative-position tables, attention biases) are bound by the op that first combines them with
  activations (:data:`archspace.primitives.FREE_PARAM_PRIMITIVES`), however they were reshaped, indexed or
  interpolated before;
- attention (Vaswani et al., NeurIPS 2017, Sec. 3.2) is one ``msa`` node, found three ways: ``nn.MultiheadAttention``
  (``multi_head_attention_forward``, with its projections as the reference's transformer op), the fused
  ``scaled_dot_product_attention``, and the explicit ``softmax(q k^T) v``: a product of two activations opens a score
  map, element-wise ops on it (scaling, masks, position biases) stay in it and bind their parameters to it, the
  softmax makes it ``msa``, and the product with the values joins it;
- squeeze-excitation modules are found as *units* (:data:`archspace.primitives.UNIT_PRIMITIVES`).

The result keeps dropped ops that join two or more branches (``primitive is None``); :mod:`archspace.graph`
contracts them, prunes to the output's ancestors and orders the nodes.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from .errors import UsageError
from .meta_shapes import FAST_RULES, fast_output
from .primitives import (
    ATTENTION_NORMALISERS,
    ATTENTION_PRODUCTS,
    FREE_PARAM_PRIMITIVES,
    FUNCTION_PRIMITIVES,
    primitive_of_module,
    unit_primitive,
)

_CONV_LIKE = ("conv", "sep_conv", "dil_conv")
_NORMS = ("bn", "ln")
_MHA_ARGS = {
    # torch.nn.functional.multi_head_attention_forward
    "multi_head_attention_forward": (
        "query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias", "bias_k",
        "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
        "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
        "k_proj_weight", "v_proj_weight",
    ),
    # the fused fast path of nn.MultiheadAttention
    "_native_multi_head_attention": (
        "query", "key", "value", "embed_dim", "num_head", "in_proj_weight", "in_proj_bias", "out_proj_weight",
        "out_proj_bias",
    ),
}
#: Ops whose output does not depend on their inputs' values (autograd does not link them either).
_UNTRACKED = frozenset({
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like", "new_zeros",
    "new_ones", "new_empty", "new_full", "new_tensor", "detach", "detach_",
})
_POOLS = ("max_pool", "avg_pool")
#: Ops that read only the type or shape of their other tensor arguments (``w.type_as(x)``): only the first is data.
_FIRST_ARG_ONLY = frozenset({"type_as", "expand_as", "view_as", "reshape_as", "to"})
#: Fused attention functions (``scaled_dot_product_attention``): one ``msa`` node.
_FUSED_ATTENTION = frozenset(n for n, p in FUNCTION_PRIMITIVES.items() if p == "msa")
#: Layer functions: one of them reading an attention map ends the attention (talking-heads projections, outputs).
_LAYER_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "layer_norm", "group_norm", "rms_norm",
                        "batch_norm", "instance_norm"})


class DisconnectedOutputError(UsageError):
    """The model's output does not depend on its input through any recorded operation."""


class _TracerBug(Exception):
    """A failure of the tracer's own bookkeeping (a bug of ours, raised ``from`` the original error), as opposed to a
    failure of the traced model, which becomes a :class:`ForwardError`; :func:`capture` re-raises the original."""


class ForwardError(UsageError, RuntimeError):
    """The model's forward pass fails on an input of the requested shape (on the meta device and on real tensors).

    Usually the input is too small or of the wrong kind for the model (a 16x16 image through five max-pools), so it
    is a :class:`~archspace.errors.UsageError`; it is also a ``RuntimeError``, what the forward pass raised before.

    Attributes:
        input_shape: the shape the model was run on, ``(1, C, H, W)``.
        reason: the model's own error, ``"TypeName: first line of its message"``.
    """

    def __init__(self, message: str, input_shape: tuple[int, ...], reason: str):
        super().__init__(message)
        self.input_shape = tuple(input_shape)
        self.reason = reason

    def __reduce__(self):  # keep the attributes across processes (dataset workers)
        return type(self), (str(self), self.input_shape, self.reason)


@dataclass
class RawNode:
    """A node of the captured graph before contraction.

    Attributes:
        primitive: primitive name, or ``None`` for an op to be dropped with its neighbours joined.
        preds: raw ids of the nodes whose outputs it consumes.
        params: names of the parameters bound to it.
        label: module path or op name, for people.
        shape: its parameter's shape, or ``(1, 1, kh, kw)`` for a pooling kernel (the reference's shape feature).
        is_param: whether it was made for a parameter (as opposed to an op).
    """

    primitive: str | None
    preds: list[int]
    params: list[str] = field(default_factory=list)
    label: str = ""
    shape: tuple[int, ...] = ()
    is_param: bool = False


@dataclass
class Capture:
    """The raw graph of one forward pass.

    Attributes:
        nodes: raw nodes in creation (execution) order; node 0 is the input.
        output: raw id of the node that produced the model's (first) output.
        unsupported: parameters consumed by the forward pass for which no rule exists -> their module type.
        device: ``"meta"`` or the device the fallback pass ran on.
        rules: the binding rule of every parameter of the model (see :func:`param_rules`).
    """

    nodes: list[RawNode]
    output: int
    unsupported: dict[str, str]
    device: str
    rules: dict[str, ParamRule] = field(default_factory=dict)


class ParamRule(NamedTuple):
    """How one parameter enters the graph.

    Attributes:
        name: name in ``model.named_parameters()``.
        kind: ``weight`` / ``bias`` / ``norm`` / ``chain`` (a node in the data path), ``source`` (a node without
            inputs feeding the consuming op, e.g. ``pos_enc``), ``attention`` (bound to an ``msa`` node), or
            ``free`` (owned by no layer type of :mod:`archspace.primitives`: decided where the forward pass first
            combines it with activations, see :data:`archspace.primitives.FREE_PARAM_PRIMITIVES`).
        primitive: primitive of its node, ``None`` for ``free``.
        key: nodes are shared by parameters with the same key (a norm layer's weight and bias).
        module_type: class name of the owning module.
        shape: shape of the node's main parameter.
    """

    name: str
    kind: str
    primitive: str | None
    key: str
    module_type: str
    shape: tuple[int, ...]


def param_rules(model: nn.Module, modules: list[tuple[str, nn.Module]] | None = None) -> dict[str, ParamRule]:
    """Decide, for every parameter of ``model``, how it is bound to graph nodes (see :class:`ParamRule`).

    Args:
        model: any ``nn.Module``.
        modules: ``list(model.named_modules())`` if already at hand.

    Returns:
        Parameter name (as in ``model.named_parameters()``) -> rule, in that order.
    """
    rules: dict[str, ParamRule] = {}
    seen: set[int] = set()
    for mod_name, module in (model.named_modules() if modules is None else modules):
        if not module._parameters:
            continue
        primitive = None
        # module._parameters is what named_parameters(recurse=False) walks, without its per-module overhead
        for local, p in module._parameters.items():
            if p is None or id(p) in seen:  # tied parameter: named_parameters() keeps the first name
                continue
            seen.add(id(p))
            name = f"{mod_name}.{local}" if mod_name else local
            if is_lazy(p):  # LazyConv2d, LazyLinear, ...: no shape until a first forward pass
                raise UsageError(f"to_graph: {name} of {type(module).__name__} is not initialised yet (a lazy "
                                 "module): run one forward pass on an input first, then build the graph")
            if primitive is None:
                primitive = (primitive_of_module(module),)
            rules[name] = _rule(name, local, mod_name, module, primitive[0], tuple(p.shape))
    return rules


def _rule(name: str, local: str, mod_name: str, module: nn.Module, primitive: str | None,
          shape: tuple[int, ...]) -> ParamRule:
    mtype = type(module).__name__
    if primitive == "msa" and local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        return ParamRule(name, "weight", "conv", name, mtype, shape)
    if primitive == "msa" and local == "in_proj_bias":
        return ParamRule(name, "bias", "bias", name, mtype, shape)
    if local == "weight_g" and "weight_v" in module._parameters:
        # torch.nn.utils.weight_norm (the old hook): weight = g * v / |v|. The gain is free, so that the gain rule
        # joins it to v's node, as for the newer parametrizations.weight_norm (one node, not a second conv)
        return ParamRule(name, "free", None, name, mtype, shape)
    if primitive in _CONV_LIKE and local.startswith(("weight", "bias")):  # also an LSTM's weight_ih_l0, bias_hh_l0
        kind = "weight" if local.startswith("weight") else "bias"
        return ParamRule(name, kind, primitive if kind == "weight" else "bias", name, mtype, shape)
    if primitive in _NORMS and local in ("weight", "bias"):
        main = getattr(module, "weight", None)
        main_shape = tuple(main.shape) if isinstance(main, torch.Tensor) else shape
        return ParamRule(name, "norm", primitive, f"{mod_name}#norm", mtype, main_shape)
    if primitive == "pos_enc":
        return ParamRule(name, "source", "pos_enc", name, mtype, shape)
    return ParamRule(name, "free", None, name, mtype, shape)


@dataclass
class _Unit:
    primitive: str
    name: str
    start: int
    node: int | None = None


def _in_place(name: str) -> bool:
    """Whether torch function ``name`` writes into its first argument (``add_``, ``__iadd__``, ``__setitem__``)."""
    return (name.endswith("_") and not name.startswith("_")) or name in (
        "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ior__", "__iand__")


def _leaves(obj: Any) -> list[torch.Tensor]:
    """Tensors in ``obj``, looking into lists, tuples and dict values (nested)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = obj.values()
    elif not isinstance(obj, (list, tuple)):
        return []
    out = []
    for o in obj:
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif isinstance(o, (list, tuple, dict)):
            out.extend(_leaves(o))
    return out


class _Tracer(TorchFunctionMode):
    """Records which node produced each tensor while the model runs (see the module docstring)."""

    def __init__(self, rules: dict[str, ParamRule], module_names: dict[int, str], unit_prims: dict[int, str],
                 fast: bool):
        super().__init__()
        self.rules = rules
        self.module_names = module_names
        self.unit_prims = unit_prims
        self.fast = fast
        self.nodes: list[RawNode] = [RawNode("input", [], label="input")]
        # id(tensor) -> producing node id (int) or the parameters it was computed from (tuple of names)
        self.values: dict[int, int | tuple[str, ...]] = {}
        self.alive: list[torch.Tensor] = []  # keeps every seen tensor alive so that ids are never reused
        self.param_nodes: dict[str, int] = {}
        self.unsupported: dict[str, str] = {}
        self.modules: list[str] = []
        self.units: list[_Unit] = []
        self.free: dict[str, ParamRule] = {}  # free parameters: the rule decided at their first use
        # attention nodes still open: node id -> whether it is already ``msa`` (after the softmax) rather than a
        # score map waiting for one
        self.open: dict[int, bool] = {}

    # ---------------------------------------------------------------- bookkeeping
    def _set(self, tensors: list[torch.Tensor], value: int | tuple[str, ...]) -> None:
        for t in tensors:
            self.values[id(t)] = value
            self.alive.append(t)

    def _new(self, primitive: str | None, preds: list[int], label: str, shape: tuple[int, ...] = ()) -> int:
        self.nodes.append(RawNode(primitive, preds, label=label, shape=shape))
        return len(self.nodes) - 1

    def _label(self, what: str) -> str:
        return f"{self.modules[-1]}:{what}" if self.modules and self.modules[-1] else what

    def _param_node(self, rule: ParamRule, preds: list[int]) -> int:
        idx = self.param_nodes.get(rule.key)
        if idx is None:
            idx = len(self.nodes)
            self.nodes.append(RawNode(rule.primitive, [], label=rule.name, shape=rule.shape, is_param=True))
            self.param_nodes[rule.key] = idx
        node = self.nodes[idx]
        for p in preds:
            if p != idx and p not in node.preds:
                node.preds.append(p)
        if rule.name not in node.params:
            node.params.append(rule.name)
        return idx

    def _chain(self, params: list[str], preds: list[int], op: tuple[str, tuple, dict] | None = None
               ) -> tuple[list[int], bool]:
        """Make the nodes of ``params`` consumed by an op whose activation inputs come from ``preds``.

        Args:
            params: names of the parameters the op reads (directly or through tensors computed from them).
            preds: producers of its activation inputs.
            op: ``(name, args, kwargs)`` of the op, to decide the free parameters met for the first time.

        Returns:
            The op's producers: ``[last layer node]`` and ``True`` when a layer node was made, else ``preds`` plus
            the source nodes (``pos_enc``) feeding the op, and ``False``.
        """
        sources, chain, free = [], [], []
        for name in params:
            rule = self.rules.get(name)
            if rule is None:
                continue
            if rule.kind == "free":
                rule = self.free.get(name)
                if rule is None:
                    free.append(name)
                    continue
                if rule.kind != "source":
                    # Bound at its first use. Later uses are often other slices of it (four gates in one tensor)
                    # or a scale shared by several heads: linking them all to one node would make cycles.
                    continue
            if rule.kind == "source":
                sources.append(self._param_node(rule, []))
            else:
                chain.append(rule)
        if free:
            for rule in self._decide_free(free, op):
                if rule.kind == "source":
                    sources.append(self._param_node(rule, []))
                else:
                    chain.append(rule)
        if not chain:
            return preds + [s for s in sources if s not in preds], False
        chain.sort(key=lambda r: r.kind == "bias")  # weight (or norm) first, then its bias
        current, last = preds + sources, None
        for rule in chain:
            node = self._param_node(rule, current)
            if node != last:
                current, last = [node], node
        return current, True

    def _decide_free(self, free: list[str], op: tuple[str, tuple, dict] | None) -> list[ParamRule]:
        """Rules for free parameters met for the first time, from the op that reads them and the tensor each
        arrives in (:data:`archspace.primitives.FREE_PARAM_PRIMITIVES`); remembered for their later uses.
        Parameters that no rule covers are recorded as unsupported."""
        name, args, kwargs = op if op is not None else ("", (), {})
        role = FREE_PARAM_PRIMITIVES.get(name)
        todo = dict.fromkeys(free)
        out: list[ParamRule] = []
        group: str | None = None  # ln/bn: one node for all free parameters of the op
        for t in _leaves(args) + _leaves(kwargs):
            value = self.values.get(id(t))
            if type(value) is not tuple:
                continue
            names = [n for n in value if n in todo]
            if not names:
                continue
            for n in names:
                del todo[n]
            first = self.rules[names[0]]
            layer = next((self.rules[n] for n in value if self.rules[n].kind not in ("free", "source")), None)
            if layer is not None:  # computed together with a layer's weight (a gain): part of that node
                kind, prim, key, shape = layer.kind, layer.primitive, layer.key, layer.shape
            elif role is None:
                for n in names:
                    self.unsupported[n] = self.rules[n].module_type
                continue
            elif role == "pos_enc" or role == "sum" and sum(s > 1 for s in t.shape) > 1:
                out += [self._remember(n, "source", "pos_enc", n, self.rules[n].shape) for n in names]
                continue
            elif role in ("sum", "conv") and (role == "sum" or t.dim() < 2):
                kind, prim, key, shape = "bias", "bias", f"free#{first.name}", first.shape
            elif role == "conv":
                kind, prim, key, shape = "weight", "conv", f"free#{first.name}", first.shape
            else:
                group = group or first.name
                kind, prim, key, shape = "chain", role, f"free#{group}", self.rules[group].shape
            out += [self._remember(n, kind, prim, key, shape) for n in names]
        for n in todo:  # not found among the operands (nested in an unusual container)
            self.unsupported[n] = self.rules[n].module_type
        return out

    def _remember(self, name: str, kind: str, primitive: str | None, key: str, shape: tuple[int, ...]) -> ParamRule:
        rule = ParamRule(name, kind, primitive, key, self.rules[name].module_type, shape)
        self.free[name] = rule
        return rule

    # ---------------------------------------------------------------- attention
    def _attention_inputs(self, params: list[str], preds: list[int]) -> tuple[list[int], list[str]]:
        """Parameters that enter an attention score map (or the mask of a fused attention).

        Layers among them (a small MLP on relative coordinates) get their nodes, fed by the attention's inputs
        ``preds``; free parameters (relative-position tables, attention biases, temperatures, gates) are bound to
        the ``msa`` node itself.

        Returns:
            The producers to add to the attention node's inputs, and the free parameters to bind to it.
        """
        layers, bind = [], []
        for name in params:
            rule = self.rules.get(name)
            if rule is None:
                continue
            if rule.kind == "free":
                if name not in self.free:
                    bind.append(name)
            else:
                layers.append(name)
        extra = []
        if layers:
            producers, made = self._chain(layers, list(preds))
            extra = producers if made else [p for p in producers if p not in preds]
        return extra, bind

    def _bind_to_attention(self, node_id: int, names: list[str]) -> None:
        node = self.nodes[node_id]
        for name in names:
            self._remember(name, "attention", "msa", f"attention#{node_id}", self.rules[name].shape)
            node.params.append(name)
        if names and not node.shape:
            node.shape = self.rules[names[0]].shape

    def _fused_attention(self, acts: list[int], params: list[str]) -> int:
        """``scaled_dot_product_attention``: one ``msa`` node fed by the producers of ``q``, ``k``, ``v`` (and of
        an additive mask computed from activations); parameters in the mask are bound to it."""
        extra, bind = self._attention_inputs(params, acts) if params else ([], [])
        node = self._new("msa", acts + [e for e in extra if e not in acts], self._label("msa"))
        self._bind_to_attention(node, bind)
        return node

    def _attention_step(self, name: str, attn: int, acts: list[int], params: list[str], n_acts: int,
                        outs: list[torch.Tensor]) -> bool:
        """An op reading the open attention node ``attn``; returns whether it was handled here.

        Scaling, masks, biases, reshapes and dropout stay in the node (their parameters are bound to it, and
        activations computed since it opened, such as relative-position logits of ``q``, become its inputs); the
        softmax of a score map makes it ``msa``; the product of the ``msa`` weights with another activation (the
        values) joins it and closes it; a layer op, or an activation from before the attention (a residual), closes
        it.
        """
        node = self.nodes[attn]
        is_msa = self.open[attn]
        if name in ATTENTION_PRODUCTS and n_acts >= 2:
            if not is_msa:  # a product of the scores with another activation (k^T v of linear attention)
                self._close(attn)
                return False
            del self.open[attn]
            node.preds.extend(a for a in acts if a != attn and a not in node.preds)
            self._set(outs, attn)
            return True
        if name in ATTENTION_NORMALISERS:
            if not is_msa:
                node.primitive, node.label = "msa", self._label("msa")
                self.open[attn] = True
            self._set(outs, attn)
            return True
        if name in _LAYER_OPS or any(a < attn for a in acts):
            # a layer reads the map, or it meets an activation from before the attention (a residual): it ends
            self._close(attn)
            return False
        if params:
            extra, bind = self._attention_inputs(params, [p for p in node.preds if p != attn])
            node.preds.extend(e for e in extra if e != attn and e not in node.preds)
            self._bind_to_attention(attn, bind)
        node.preds.extend(a for a in acts if a != attn and a not in node.preds)
        self._set(outs, attn)
        return True

    def _close(self, attn: int) -> None:
        """End an attention region without the softmax-and-values pattern. A score map that bound parameters
        (a learned temperature or bias on a product of activations) is kept as ``msa``; one without stays a join
        of its inputs (linear or factorised attention, a Gram matrix)."""
        del self.open[attn]
        node = self.nodes[attn]
        if node.primitive is None and node.params:
            node.primitive = "msa"

    # ---------------------------------------------------------------- module hooks
    def pre_hook(self, module: nn.Module, args: Any) -> None:
        try:
            self._enter(module)
        except Exception as error:
            raise _TracerBug from error

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        try:
            self._leave(module, output)
        except Exception as error:
            raise _TracerBug from error

    def _enter(self, module: nn.Module) -> None:
        name = self.module_names.get(id(module))
        if name is None:
            return
        self.modules.append(name)
        prim = self.unit_prims.get(id(module))
        if prim is not None:
            self.units.append(_Unit(prim, name, len(self.nodes)))

    def _leave(self, module: nn.Module, output: Any) -> None:
        name = self.module_names.get(id(module))
        if name is None:
            return
        self.modules.pop()
        if id(module) in self.unit_prims:
            self._close_unit(self.units.pop(), output)

    def _close_unit(self, unit: _Unit, output: Any) -> None:
        leaves = _leaves(output)
        value = self.values.get(id(leaves[0])) if leaves else None
        if unit.node is None and type(value) is int:
            node = self.nodes[value]
            if value >= unit.start and not node.is_param and node.primitive is None:
                node.primitive, node.label = unit.primitive, f"{unit.name}:{unit.primitive}"
                unit.node = value
            else:  # the unit's output comes straight from a layer: add the unit node after it
                unit.node = self._new(unit.primitive, [value], f"{unit.name}:{unit.primitive}")
                self._set([t for t in leaves if self.values.get(id(t)) == value], unit.node)

    def finish(self) -> None:
        """Close the attention regions still open at the end of the pass (see :meth:`_close`)."""
        for attn in list(self.open):
            self._close(attn)

    # ---------------------------------------------------------------- torch functions
    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Runs once per torch function call of the forward pass: kept lean (plain lookups, no per-argument lists).
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        out = fast_output(name, args, kwargs) if self.fast and name in FAST_RULES else None
        if out is None:
            out = func(*args, **kwargs)
        if name in _UNTRACKED:
            return out
        try:  # above: the model's computation (its failures are the user's); below: our bookkeeping
            return self._record(name, args, kwargs, out)
        except Exception as error:
            raise _TracerBug from error

    def _record(self, name: str, args: tuple, kwargs: dict, out: Any) -> Any:
        """Add the node (or the edges) of one torch function call to the graph; returns ``out``."""
        if name == "__setitem__":  # x[key] = value writes into x
            outs = [args[0]] if isinstance(args[0], torch.Tensor) else []
        elif isinstance(out, torch.Tensor):
            outs = [out]
        else:
            outs = _leaves(out)
        if len(outs) == 1 and outs[0]._base is not None and _in_place(name):
            # writing into a view writes into the tensor it views: later reads of that tensor see this node too
            # (as autograd's CopySlices records); e.g. y.view(...).add_(b) and then y used
            outs = [outs[0], outs[0]._base]
        if len(outs) == 1:
            if not (outs[0].is_floating_point() or outs[0].is_complex()):  # as autograd: no grad, no edge
                return out
        else:
            outs = [t for t in outs if t.is_floating_point() or t.is_complex()]
            if not outs:
                return out
        if name in _MHA_ARGS:
            self._attention(name, args, kwargs, outs)
            return out
        acts: list[int] = []
        params: list[str] = []
        n_acts = 0  # activation operands, counted with repeats (q and k of one projection share a producer)
        values = self.values
        if name in _FIRST_ARG_ONLY:
            args, kwargs = args[:1], {}
        for a in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(a, torch.Tensor):
                tensors: Any = (a,)
            elif isinstance(a, (list, tuple, dict)):
                tensors = _leaves(a)
            else:
                continue
            for t in tensors:
                v = values.get(id(t))
                if v is None:
                    continue
                if type(v) is int:  # made by node v
                    n_acts += 1
                    if v not in acts:
                        acts.append(v)
                else:  # parameter names
                    params.extend(p for p in v if p not in params)
        if not acts:
            if params:  # computed from parameters only (e.g. a transposed weight): follow it to its consumer
                self._set(outs, tuple(params))
            return out
        if self.open:
            attn = max((a for a in acts if a in self.open), default=None)
            if attn is not None and self._attention_step(name, attn, acts, params, n_acts, outs):
                return out
        if name in _FUSED_ATTENTION:
            self._set(outs, self._fused_attention(acts, params))
            return out
        if params:
            producers, made_layer = self._chain(params, acts, (name, args, kwargs))
            if made_layer:
                self._set(outs, producers[0])
                return out
            acts = producers
        if n_acts >= 2 and name in ATTENTION_PRODUCTS:  # q k^T: a score map, open until softmax and values
            node = self._new(None, acts, self._label(name))
            self.open[node] = False
            self._set(outs, node)
            return out
        primitive, shape = self._op_primitive(name, args, kwargs)
        if primitive is None or primitive in ("sum", "concat"):
            if len(acts) == 1:  # dropped op, or a sum/concat of one branch: the reference joins its neighbours
                self._set(outs, acts[0])
                return out
        node = self._new(primitive, acts, self._label(primitive or name), shape)
        self._set(outs, node)
        return out

    def _op_primitive(self, name: str, args: tuple, kwargs: dict) -> tuple[str | None, tuple[int, ...]]:
        unit = self.units[-1] if self.units else None
        if unit is not None and unit.primitive == "cse":
            return None, ()  # everything inside a squeeze-excitation collapses into its cse node
        primitive = FUNCTION_PRIMITIVES.get(name)
        if primitive == "glob_avg" and name == "mean" and not _is_spatial_mean(args, kwargs):
            return None, ()
        if primitive in _POOLS:
            kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
            if kernel is None:
                return primitive, ()
            kernel = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel, kernel)
            return primitive, (1, 1, *(int(k) for k in kernel))
        return primitive, ()

    def _attention(self, name: str, args: tuple, kwargs: dict, outs: list[torch.Tensor]) -> None:
        """``multi_head_attention_forward``: in-projection weight and bias, ``msa``, out-projection weight and bias
        (the reference's transformer op: ``to_qkv`` linear, attention, ``to_out`` linear)."""
        named = dict(zip(_MHA_ARGS[name], args))
        named.update(kwargs)

        def params(key: str) -> list[str]:
            v = self.values.get(id(named.get(key))) if isinstance(named.get(key), torch.Tensor) else None
            return list(v) if isinstance(v, tuple) else []

        def producer(key: str) -> list[int]:
            v = self.values.get(id(named.get(key))) if isinstance(named.get(key), torch.Tensor) else None
            return [v] if type(v) is int else []

        qkv = list(dict.fromkeys(producer("query") + producer("key") + producer("value")))
        if not qkv:
            return
        if named.get("use_separate_proj_weight"):
            heads = []
            for role in ("query", "key", "value"):
                heads += [h for h in self._chain(params(role[0] + "_proj_weight"), producer(role) or qkv)[0]
                          if h not in heads]
            current = heads
        else:
            current = self._chain(params("in_proj_weight"), qkv)[0]
        current = self._chain(params("in_proj_bias"), current)[0]
        msa = self._new("msa", current, self._label("msa"))
        self._bind_to_attention(msa, [p for key in ("bias_k", "bias_v") for p in params(key) if p not in self.free])
        current = self._chain(params("out_proj_weight") + params("out_proj_bias"), [msa])[0]
        self._set(outs, current[0])


def _is_spatial_mean(args: tuple, kwargs: dict) -> bool:
    """Whether ``mean`` averages a 4-D feature map over its two spatial dims (global average pooling)."""
    x = args[0] if args else kwargs.get("input")
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or dim is None:
        return False
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return sorted(int(d) % 4 for d in dims) == [2, 3]


def _first_tensor(out: Any) -> torch.Tensor | None:
    """The reference's choice of output: the first element of tuples/lists (auxiliary heads are ignored)."""
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    return out if isinstance(out, torch.Tensor) else None


def capture(model: nn.Module, input_shape: tuple[int, ...], fast: bool = True, device: str = "meta") -> Capture:
    """Run ``model`` once on an input of ``input_shape`` and record its raw op graph.

    The model runs in eval mode (its train/eval flags are restored afterwards) so that dropout, batch-norm batch
    checks and auxiliary heads do not interfere. On the meta device (default) the parameters and buffers are
    swapped for meta tensors during the pass (and restored, also on errors); if the model cannot run on meta
    tensors (it builds CPU tensors in ``forward``, say), the pass is repeated on zeros on the model's own device
    without gradients.

    Args:
        model: any ``nn.Module`` taking one tensor.
        input_shape: ``(B, C, H, W)`` (or any shape the model accepts).
        fast: use the shape rules of :mod:`archspace.meta_shapes` instead of slow meta kernels.
        device: ``"meta"``, or ``"model"`` to run on the model's device directly.

    Returns:
        The :class:`Capture`.

    Raises:
        ForwardError: (a ``UsageError`` and ``RuntimeError``) the model failed on both devices; the message carries
            the first line of the model's own error, the full one is chained as ``__cause__``.
        DisconnectedOutputError: (a ``UsageError``) the output does not depend on the input.
    """
    modules = list(model.named_modules())
    rules = param_rules(model, modules)
    module_names: dict[int, str] = {}
    unit_prims: dict[int, str] = {}
    unit_of_type: dict[type, str | None] = {}  # unit_primitive depends on the class only
    flags: list[tuple[nn.Module, bool]] = []
    for n, m in modules:
        module_names[id(m)] = n
        cls = type(m)
        unit = unit_of_type[cls] if cls in unit_of_type else unit_of_type.setdefault(cls, unit_primitive(m))
        if unit is not None:
            unit_prims[id(m)] = unit
        flags.append((m, m.training))
        m.__dict__["training"] = False  # eval mode (restored below), without nn.Module.__setattr__'s overhead
    gc_enabled = gc.isenabled()
    gc.disable()  # the pass makes thousands of small objects; collections in the middle cost more than they free
    try:
        meta_error = None
        if device == "meta":
            try:
                return _run(model, modules, input_shape, rules, module_names, unit_prims, fast, meta=True)
            except (DisconnectedOutputError, _TracerBug):
                raise
            except Exception as error:  # noqa: BLE001 - retried on real tensors below
                meta_error = error
        try:
            result = _run(model, modules, input_shape, rules, module_names, unit_prims, fast, meta=False)
        except (DisconnectedOutputError, _TracerBug):
            raise
        except Exception as error:
            lines = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
            raise ForwardError(f"to_graph: the forward pass of {type(model).__name__} on an input of shape "
                               f"{tuple(input_shape)} failed: {reason}", input_shape, reason) from error
        if meta_error is not None:
            warnings.warn(f"to_graph: {type(model).__name__} does not run on the meta device "
                          f"({type(meta_error).__name__}: {meta_error}); traced on real tensors instead (slower)",
                          stacklevel=3)
        return result
    except _TracerBug as bug:  # our bug: the original error with its own traceback, not a user error
        raise bug.__cause__.with_traceback(bug.__cause__.__traceback__) from None
    finally:
        for m, training in flags:
            m.__dict__["training"] = training
        if gc_enabled:
            gc.enable()


def _run(model: nn.Module, modules: list[tuple[str, nn.Module]], input_shape: tuple[int, ...],
         rules: dict[str, ParamRule], module_names: dict[int, str], unit_prims: dict[int, str], fast: bool,
         meta: bool) -> Capture:
    first = next(iter(rules), None)
    first = model.get_parameter(first) if first is not None else None
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
    swapped: list[tuple[dict, str, torch.Tensor]] = []
    params: dict[str, torch.Tensor] = {}
    if meta:
        # Swap every parameter and buffer for an empty meta tensor, in place in the modules' dicts (cheaper than
        # functional_call's reparametrisation); tied tensors get the same meta tensor. Restored in ``finally``.
        meta_of: dict[int, torch.Tensor] = {}
        for mod_name, m in modules:
            for store in (m._parameters, m._buffers):
                for key, t in store.items():
                    if t is None:
                        continue
                    mt = meta_of.get(id(t))
                    if mt is None:
                        mt = meta_of[id(t)] = torch.empty_like(t, device="meta")
                    swapped.append((store, key, t))
                    store[key] = mt
                    name = f"{mod_name}.{key}" if mod_name else key
                    if store is m._parameters and name in rules:
                        params[name] = mt
        x = torch.empty(input_shape, dtype=dtype, device="meta")
    else:
        params = {n: model.get_parameter(n) for n in rules}
        x = torch.zeros(input_shape, dtype=dtype, device=first.device if first is not None else "cpu")
    tracer = _Tracer(rules, module_names, unit_prims, fast=fast and meta)
    for n, t in params.items():
        tracer._set([t], (n,))
    tracer._set([x], 0)
    caches = _caches(modules, rules)
    pre = nn.modules.module.register_module_forward_pre_hook(tracer.pre_hook)
    post = nn.modules.module.register_module_forward_hook(tracer.post_hook)
    try:
        with torch.no_grad(), tracer:
            out = model(x)
        tracer.finish()
    finally:
        pre.remove()
        post.remove()
        for store, key, t in reversed(swapped):
            store[key] = t
        _drop_new_entries(caches, tracer.values)
    y = _first_tensor(out)
    value = tracer.values.get(id(y)) if y is not None else None
    if type(value) is not int or value == 0 and len(tracer.nodes) == 1:
        raise DisconnectedOutputError(f"to_graph: the output of {type(model).__name__} does not depend on its input "
                                      "through any operation; nothing to build a graph from")
    last = tracer.nodes[value]
    if last.primitive is None and len(last.preds) > 1:  # heads averaged (torch.stack(...).mean(0)): one sum node
        last.primitive, last.label = "sum", "output:sum"
    return Capture(tracer.nodes, value, tracer.unsupported, "meta" if meta else str(x.device), rules)


def _caches(modules: list[tuple[str, nn.Module]], rules: dict[str, ParamRule]) -> list[tuple[dict, set]]:
    """The dict attributes of the modules that own free parameters, with their keys before the pass.

    Such modules may cache tensors computed from their parameters in eval mode, keyed by device (LeViT's and
    EfficientFormer's ``attention_bias_cache``): an entry made during the pass would hold a meta tensor and hide the
    parameter from every later capture, so :func:`_drop_new_entries` removes it again.
    """
    owners = {name.rpartition(".")[0] for name, rule in rules.items() if rule.kind == "free"}
    if not owners:
        return []
    out = []
    for mod_name, m in modules:
        if mod_name in owners:
            out += [(v, set(v)) for k, v in vars(m).items() if type(v) is dict and not k.startswith("_")]
    return out


def _drop_new_entries(caches: list[tuple[dict, set]], values: dict[int, Any]) -> None:
    """Remove the cache entries added during the pass that hold tensors the pass computed (see :func:`_caches`)."""
    for cache, before in caches:
        for key in [k for k in cache if k not in before]:
            if any(id(t) in values for t in _leaves(cache[key])):
                del cache[key]
