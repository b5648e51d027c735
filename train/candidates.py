"""Parse a list of candidate architectures for ``ghn rank`` into lazily built :class:`Candidate` objects.

Ranking designs by their accuracy with predicted parameters is the GHN's "property prediction" use (Knyazev et
al., NeurIPS 2021, Sec. 5.3). A candidate list is a sequence of arguments, each a comma list of tokens:

==============================  ==========================================================================
token                           candidates
==============================  ==========================================================================
``deepnets:SPLIT``              every net of a DeepNets-1M split (``archspace.SPLITS``)
``deepnets:SPLIT/0-99``         nets 0..99 (inclusive) of the split; ``/3``, ``/0-9,20-29`` also work
``torchvision:NAME``            a torchvision model, default initialisation (``torchvision:resnet18``)
``timm:NAME``                   a timm model, default initialisation, never pretrained (``timm:convnext_atto``)
``pkg.module:callable``         a model returned by ``callable(num_classes=...)``
``PATH`` or ``file:PATH``       a text file, one candidate per line: a JSON object (a ``Genotype.to_dict()``,
                                or ``{"name": ..., "genotype": {...}}``) or any token above; ``#`` comments
==============================  ==========================================================================

A token without a scheme continues the previous one: ``torchvision:resnet18,vgg11_bn`` is two torchvision
models, ``timm:convnext_atto,resnet50.a1_in1k`` two timm models and ``deepnets:test/0-9,20-29`` twenty nets of the
test split. Nets are built only when asked (:meth:`Candidate.build`), so hundreds of candidates cost nothing until
they are scored one by one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from archspace.errors import UsageError, suggest
from archspace.models import check_spec, load_model


class CandidateError(UsageError):
    """A candidate list that cannot be parsed; the message says which token and what to write instead.

    An unknown model name in a ``torchvision:`` or ``pkg.module:callable`` token is reported by
    :func:`archspace.models.check_spec` as a :class:`archspace.models.ModelSpecError` (also a ``UsageError``).
    """


@dataclass(frozen=True)
class Candidate:
    """One architecture to rank: a readable unique ``name`` and how to build it.

    Exactly one of ``spec`` (a model spec for :func:`archspace.models.load_model`, already checked) and
    ``genotype`` (a ``Genotype.to_dict()`` dict) is set. ``width`` overrides the base width ``C`` of DeepNets-1M
    nets (ignored by other models).
    """

    name: str
    spec: str | None = None
    genotype: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    width: int | None = None

    def build(self, num_classes: int = 10, image_size: int = 32) -> nn.Module:
        """Build the network at its default initialisation (seed the global RNG first for reproducibility).

        A torchvision model gets the GHN-2 CIFAR recipe for small images (:func:`archspace.adapt_small_input`)
        when ``image_size < 64``.

        Args:
            num_classes: classifier outputs.
            image_size: input resolution.

        Returns:
            The network, on CPU, in training mode.

        Raises:
            archspace.models.ModelSpecError: the model cannot be built (e.g. a callable that returns no module).
        """
        if self.genotype is not None:
            from archspace.genotype import Genotype
            from archspace.network import Network

            return Network(Genotype.from_dict(self.genotype), num_classes=num_classes, image_size=image_size,
                           width=self.width)
        small = self.spec.startswith("torchvision:") and image_size < 64
        return load_model(self.spec, num_classes=num_classes, small_input=small, image_size=image_size,
                          width=self.width)


def _parse_range(text: str, size: int, token: str) -> range:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if m is None:
        raise CandidateError(f"bad index {text!r} in {token!r}: write an index (3) or an inclusive range (0-99)")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise CandidateError(f"empty range {text!r} in {token!r}: write LOW-HIGH with LOW <= HIGH")
    if hi >= size:
        raise CandidateError(f"index {hi} in {token!r} is out of range: the split has nets 0-{size - 1}")
    return range(lo, hi + 1)


#: A whole split is accepted as a candidate list only up to this size (``deepnets:train`` is a million nets).
_WHOLE_SPLIT_LIMIT = 10_000


def _deepnets(rest: str, token: str) -> tuple[str, range]:
    from archspace.sampler import SPLITS

    split, _, idx = rest.partition("/")
    if split not in SPLITS:
        raise CandidateError(f"unknown DeepNets-1M split {split!r} in {token!r}" + suggest(split, SPLITS))
    if not idx and SPLITS[split] > _WHOLE_SPLIT_LIMIT:
        raise CandidateError(f"{token!r} would rank all {SPLITS[split]:,} nets of the split; give a range, e.g. "
                             f"deepnets:{split}/0-99")
    return split, (_parse_range(idx, SPLITS[split], token) if idx else range(SPLITS[split]))


def _from_file(path: str, reading: frozenset[str]) -> list[Candidate]:
    """The candidates a file lists; ``reading``: the real paths of the files whose lines led here (a file that
    lists itself, directly or through others, is refused)."""
    if not os.path.isfile(path):
        raise CandidateError(f"candidate file {path!r} does not exist")
    from archspace.genotype import Genotype

    real = os.path.realpath(path)
    if real in reading:
        raise CandidateError(f"candidate file {path!r} lists itself (directly or through another file)")
    out: list[Candidate] = []
    base = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(i, ln.strip()) for i, ln in enumerate(f, 1)]
    except UnicodeDecodeError:
        raise CandidateError(f"candidate file {path!r} is not a UTF-8 text file: write one candidate or "
                             "Genotype.to_dict() object per line") from None
    for lineno, line in lines:
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CandidateError(f"{path}:{lineno}: not valid JSON ({e.msg}); write one Genotype.to_dict() "
                                     "object per line") from e
            genotype = obj.get("genotype", obj)
            try:
                Genotype.from_dict(genotype)
            except (TypeError, ValueError) as e:
                raise CandidateError(f"{path}:{lineno}: not a valid genotype ({e}); write Genotype.to_dict() "
                                     "objects, one per line") from e
            name = obj.get("name") or f"{base}:{lineno}"
            out.append(Candidate(name=str(name), genotype=genotype))
        else:
            out.extend(_parse([line], reading | {real}))
    return out


def parse_candidates(args: Iterable[str], width: int | None = None) -> list[Candidate]:
    """Turn candidate arguments (see the module docstring for the grammar) into candidates, duplicates (the same
    name for the same architecture) dropped.

    Args:
        args: command-line arguments, each a comma list of tokens.
        width: base width ``C`` for every DeepNets-1M net (``None``: each genotype's own).

    Returns:
        The candidates in the order given.

    Raises:
        CandidateError: an unknown scheme, split or index, a missing, malformed, non-UTF-8 or self-listing file,
            two different candidates of one name, no candidate at all, or a width below 1.
        archspace.models.ModelSpecError: an unknown torchvision name or callable (with a suggestion).
    """
    if width is not None and width < 1:
        raise CandidateError(f"width must be a positive number of channels, got {width}")
    seen: dict[str, Candidate] = {}
    for c in _parse(args, frozenset()):
        if c.name in seen and (seen[c.name].spec, seen[c.name].genotype) != (c.spec, c.genotype):
            raise CandidateError(f"two different candidates are both named {c.name!r}: give them distinct \"name\" "
                                 "fields (files with the same name in two folders name their lines alike)")
        seen.setdefault(c.name, c)
    if not seen:
        raise CandidateError("the candidate list is empty: give at least one candidate, e.g. deepnets:test/0-9")
    return [dataclasses.replace(c, width=width) for c in seen.values()]


def _parse(args: Iterable[str], reading: frozenset[str]) -> list[Candidate]:
    """:func:`parse_candidates` without dropping duplicates; ``reading`` as in :func:`_from_file`."""
    out: list[Candidate] = []
    prefix = None  # the scheme (and split) a bare token continues
    for arg in args:
        for token in filter(None, (t.strip() for t in str(arg).split(","))):
            if token.startswith("file:") or (":" not in token and os.path.isfile(token)):
                out.extend(_from_file(token.removeprefix("file:"), reading))
                prefix = None
                continue
            if ":" not in token:
                if prefix is None:
                    raise CandidateError(f"cannot tell what {token!r} is: write deepnets:SPLIT/RANGE, "
                                         "torchvision:NAME, pkg.module:callable or the path of an existing file")
                token = prefix + token
            scheme, _, rest = token.partition(":")
            if scheme == "deepnets":
                split, indices = _deepnets(rest, token)
                out.extend(Candidate(name=f"deepnets:{split}/{i}", spec=f"deepnets:{split}/{i}") for i in indices)
                prefix = f"deepnets:{split}/"
            elif scheme in ("torchvision", "timm"):
                check_spec(token)
                out.append(Candidate(name=token, spec=token))
                prefix = scheme + ":"
            elif re.fullmatch(r"[A-Za-z_][\w.]*", scheme) and re.fullmatch(r"[A-Za-z_]\w*", rest):
                check_spec(token)
                out.append(Candidate(name=token, spec=token))
                prefix = None
            else:
                raise CandidateError(f"cannot parse candidate {token!r}: write deepnets:SPLIT/RANGE, "
                                     "torchvision:NAME, pkg.module:callable or the path of an existing file")
    return out


def one_candidate(token: str, width: int | None = None, where: str = "MODEL") -> Candidate:
    """The one architecture a token names (``ghn finetune MODEL``, a label row of ``ghn rank --embed-regressor``).

    Args:
        token: a candidate token (module docstring), e.g. ``deepnets:test/7`` or ``torchvision:resnet18``.
        width: base width ``C`` of a DeepNets-1M net (``None``: its genotype's).
        where: how the token was given, for the message.

    Returns:
        The :class:`Candidate`.

    Raises:
        CandidateError: the token names no architecture or several (a range, a list, a file of many).
        archspace.models.ModelSpecError: an unknown model name.
    """
    found = parse_candidates([token], width=width)
    if len(found) != 1:
        raise CandidateError(f"{where} {token!r} names {len(found)} architectures; name one, e.g. deepnets:test/7 "
                             "or torchvision:resnet18")
    return found[0]
