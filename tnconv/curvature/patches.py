"""Products of a conv layer's patches, formed in chunks of samples: KFAC's input factor and the GGN diagonal.

The patches ``u[n, g, :, t]`` (``(N, G, d, T)``, ``d = C_in/G * prod(K)``) are the value of the
``kfac_expand`` routine's shortcut part, the derived unfold network (``tnconv.routines``). A
whole batch of them is ``prod(K)`` times the input (75 MiB for a ResNet-18 3x3 layer at batch
32), so they are formed for chunks of samples (``chunks``, ``chunk_layers``), whose memory the
allocator reuses from chunk to chunk, and each chunk is consumed at once. How the chunks are cut,
whether a chunk's patches are views or the part's own program, and whether the Gram runs as
the layer's whole network (a pattern-pair Gram, one product) are the planner's decisions, made
for the default backend's target (``tnconv.lower.patch_gram``, ``gram_plan``): this module runs
programs and reads plans, and names no backend.

- ``accumulate_input_factor``: KFAC's ``A`` (expand: the Gram of the patches; reduce: of the
  patch sums, one chunk), by upper panels (``tnconv.routines.gram``), blended into a running
  factor in place; ``input_factor_cost`` says what it runs and its FLOPs without running it
  (the same plan, part programs and Gram decisions: ``tnconv curvature`` prints it).
  KFAC-expand runs as the layer's whole network instead (``expand_network``) where its plan is
  a pattern-pair Gram (``tnconv.lower.pair_gram``, no patches: the planner's choice by the
  backend's speeds) or where the Gram is one product of patches that fit one chunk;
- ``diag_ggn_by_columns``: ``sum_{m,n} J[m,n]^2`` with ``J[m,n] = v[m,n] u[n]^T`` ``(c, d)`` per
  group (``v`` the columns at the layer output, ``c = C_out/G``), one batched product per
  column ``m`` and chunk: the way for layers with many output channels per group, where each
  patch read feeds ``c`` products (1.6-2.5x faster than the ``diag_ggn`` routine's per-sample
  weight-VJP kernel on ResNet-18's layers; on depthwise layers, ``c = 1``, the kernel is 3x
  faster, so ``tnconv.curvature.factors`` keeps the routine there);
- ``diag_ggn_by_location_pairs``: the same sum as ``sum_{n, t <= t'} w P[n,o,t,t'] Q[n,i,t,t']``
  with ``P = sum_m v[m,n,o,t] v[m,n,o,t']`` and ``Q = u[n,i,t] u[n,i,t']`` (``w = 2`` off the
  diagonal): one deep product instead of ``M*N`` thin ones, each writing a whole weight-sized
  ``J``. It costs ``(T + 1) / 2`` against ``M`` products per entry, so it is the way where
  ``T + 1 <= 2 M`` (deep layers: 4x4 locations, 10 columns: 14x faster than by columns).

The arguments are not checked here (the public functions and ``tnconv.curvature.factors`` do).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from tnconv.caches import cached
from tnconv.conv.hyper import ConvHyper
from tnconv.lower.patch_gram import GramPlan, NetworkGram, PatchChunk, gram_plan, patch_chunks
from tnconv.lower.target import Target
from tnconv.programs.compile import compile as compile_network
from tnconv.programs.program import Program, default_target
from tnconv.routines import gram
from tnconv.routines.derivation import routine_network
from tnconv.routines.gram import HALF, accumulate_gram, blend_symmetrized, mirror
from tnconv.routines.run import finish, part_operands, part_program, patch_rows, run_part, sums_rows
from tnconv.routines.table import TABLE

def chunk_layers(hyper: ConvHyper, per_sample: int) -> list[tuple[PatchChunk, ConvHyper]]:
    """The layer's batch in the planner's chunks of samples (``tnconv.lower.patch_gram.patch_chunks``) at
    ``per_sample`` elements a sample: each chunk and its layer."""
    return [(chunk, _chunk_layer(hyper, chunk))
            for chunk in patch_chunks(hyper.batch, per_sample, patch_elements(hyper), default_target())]


def chunks(x: torch.Tensor, hyper: ConvHyper, per_sample: int
           ) -> Iterator[tuple[PatchChunk, torch.Tensor, ConvHyper]]:  # fmt: skip
    """``x`` ``(N, C_in, *I)`` in the chunks of ``chunk_layers``: each chunk, its input and its layer."""
    for chunk, part_hyper in chunk_layers(hyper, per_sample):
        yield chunk, x[chunk.samples], part_hyper


def patch_elements(hyper: ConvHyper, pairs: bool = False) -> int:
    """Elements of one sample's patches ``(G, d, T)``, or of their location pairs (``T (T + 1) / 2`` per patch)
    when ``pairs``: what ``patches`` sizes its chunks by."""
    locations = math.prod(hyper.output_size)
    return hyper.in_channels * hyper.kernel_elements * (locations * (locations + 1) // 2 if pairs else locations)


def patches(x: torch.Tensor, hyper: ConvHyper, pairs: bool = False) -> Iterator[tuple[slice, torch.Tensor]]:
    """The patches ``(n, G, d, T)`` of the planner's chunks of samples, with the samples' slice; chunks by patch
    elements, or by location-pair elements (``T (T + 1) / 2`` per patch) when ``pairs``.

    A chunk marked ``views`` runs the unfold network by its einsum plan (strided views of the
    padded input, gathers where needed), not by the native ``unfold`` kernel: its consumers
    multiply the patches, and ``patch_rows`` lays views out for them in one copy, where im2col
    would write them once and the Gram's layout step copy them again. Smaller chunks run the
    part's program (one call, no layout step)."""
    yield from _patches(x, hyper, chunks(x, hyper, patch_elements(hyper, pairs)))


def _patches(x: torch.Tensor, hyper: ConvHyper, parts: Iterator[tuple[PatchChunk, torch.Tensor, ConvHyper]]
             ) -> Iterator[tuple[slice, torch.Tensor]]:  # fmt: skip
    """The patches of each chunk of ``parts`` (see ``patches``)."""
    routine = TABLE["kfac_expand"]
    for chunk, part, part_hyper in parts:
        program, operands = part_program(routine, part_hyper), part_operands(routine, part_hyper, {"X": part})
        patches = program.run_einsum_plan(*operands) if chunk.views else program(*operands)
        yield chunk.samples, patch_rows(patches, part_hyper)


@cached(maxsize=256)
def input_gram_plan(hyper: ConvHyper, target: Target) -> GramPlan:
    """How KFAC-expand's ``A`` of the layer runs on ``target`` (``tnconv.lower.patch_gram.gram_plan``, from the
    plan of the layer's network; cached per layer: the decision takes about 50 us, as long as a small layer's
    whole factor)."""
    network_plan = expand_network(hyper).plan
    assert network_plan is not None  # a layer's network is concrete
    return gram_plan(network_plan, hyper.patch_size, hyper.batch, patch_elements(hyper), target)


def expand_network(hyper: ConvHyper) -> Program:
    """The compiled KFAC-expand network of the layer (``sum_{n,o} U U^T``, unscaled; cached by ``compile``)."""
    return compile_network(routine_network(TABLE["kfac_expand"], hyper))


def accumulate_input_factor(
    x: torch.Tensor, hyper: ConvHyper, reduce: bool, out: torch.Tensor | None = None, alpha: float = 1.0,
    beta: float = 0.0,
) -> torch.Tensor:
    """``out = beta * out + alpha * A`` in place for KFAC's input factor ``A`` ``(G, d, d)`` of the layer ``hyper``.

    ``A`` is the KFAC-reduce factor when ``reduce``, else the KFAC-expand factor; ``out``
    (symmetric; float32 for half ``x``) is created when None. The patch sums (reduce, the
    routine's shortcut part) or the patches of each chunk (expand) are multiplied with
    themselves by upper panels, scaled by ``alpha`` times the routine's scaling, straight
    into ``out``: no temporary of the factor's size. KFAC-expand runs as its whole network
    where the planner says so (``input_gram_plan``): a pattern-pair Gram's result is blended
    into ``out`` and the lower triangle copied from the upper one (exactly symmetric), one
    product's is symmetrized into it.

    A new factor of an ``x`` that requires a gradient (grad mode on) is differentiable: the
    whole batch's patches (or patch sums) and ``gram``'s one ``einsum``.
    """
    routine = TABLE["kfac_reduce" if reduce else "kfac_expand"]
    scale = alpha * finish(routine, hyper).factor
    if out is None and x.requires_grad and torch.is_grad_enabled():  # autograd follows no in-place product
        part = run_part(routine, hyper, {"X": x})
        return gram.gram(sums_rows(part, hyper) if reduce else patch_rows(part, hyper), scale)
    if out is None:
        d = hyper.patch_size
        out = x.new_empty((hyper.groups, d, d), dtype=torch.float32 if x.dtype in HALF else x.dtype)
        beta = 0.0
    if reduce:
        return accumulate_gram(sums_rows(run_part(routine, hyper, {"X": x}), hyper), out, scale, beta)
    plan = input_gram_plan(hyper, default_target())
    if isinstance(plan, NetworkGram):
        product = expand_network(hyper)(x.to(out.dtype)).reshape(out.shape)
        if plan.pair:
            return _blend(product, out, scale, beta)
        blend_symmetrized(out, product, scale, beta)
        return out
    return accumulate_patch_gram(x, hyper, plan.chunks, out, scale, beta)


def accumulate_patch_gram(x: torch.Tensor, hyper: ConvHyper, parts: Sequence[PatchChunk], out: torch.Tensor,
                          alpha: float, beta: float) -> torch.Tensor:  # fmt: skip
    """``out = beta * out + alpha * sum_{n,t} u u^T`` in place, from the patches of the chunks ``parts`` of samples
    (unscaled: ``alpha`` carries the routine's scaling)."""
    layers = ((chunk, x[chunk.samples], _chunk_layer(hyper, chunk)) for chunk in parts)
    for _, rows in _patches(x, hyper, layers):
        accumulate_gram(rows, out, alpha, beta)
        beta = 1.0
    return out


def _chunk_layer(hyper: ConvHyper, chunk: PatchChunk) -> ConvHyper:
    """The layer of ``chunk``'s samples."""
    return hyper if chunk.size == hyper.batch else replace(hyper, input_shape=(chunk.size, *hyper.input_shape[1:]))


@dataclass(frozen=True)
class FactorCost:
    """What computing a layer's KFAC input factor ``A`` runs, in words (``strategy``), and its FLOPs.

    ``part_flops``: the programs that form the Gram's rows (the patch sums or each chunk's
    patches: a native kernel's exact count, else the einsum plan's), ``gram_flops``: the
    symmetric Gram's products as ``tnconv.routines.gram`` runs them (``gram.flops``), both
    2 per multiply-add. ``kernel``: the native kernel that forms the rows, if one does;
    ``largest_intermediate``: elements of the largest tensor that forming them creates.
    """

    strategy: str
    kernel: str | None
    part_flops: int
    gram_flops: int
    largest_intermediate: int

    @property
    def flops(self) -> int:
        return self.part_flops + self.gram_flops


def input_factor_cost(hyper: ConvHyper, reduce: bool) -> FactorCost:
    """What ``accumulate_input_factor`` runs for the layer ``hyper`` and its FLOPs, without running it.

    KFAC-reduce: the routine's shortcut part (the patch sums ``(N, G, d)``) once, then their
    Gram ``(1, G, d, N)``. KFAC-expand: the pattern-pair Gram where ``accumulate_input_factor``
    runs it (its weight-VJP calls and assembly, counted as the Gram's FLOPs), else for each
    chunk of samples (``chunk_layers``) its patches ``(n, G, d, T)`` and their Gram.
    """
    routine = TABLE["kfac_reduce" if reduce else "kfac_expand"]
    d = hyper.patch_size
    if reduce:
        program = part_program(routine, hyper)
        rows = (1, hyper.groups, d, hyper.batch)
        flops, largest = _runs(program)
        return FactorCost(f"patch sums ({program.strategy}) + {gram.strategy(rows)}", _kernel(program), flops,
                          gram.flops(rows), largest)
    plan = input_gram_plan(hyper, default_target())
    if isinstance(plan, NetworkGram):
        program = expand_network(hyper)
        if plan.pair:
            return FactorCost(f"pattern-pair Gram ({plan.calls} weight-VJP calls)", None, 0, int(program.flops),
                              int(program.largest_intermediate))
        flops, largest = _runs(program)
        return FactorCost(f"network ({program.strategy})", _kernel(program), 0, flops, largest)
    layers = [_chunk_layer(hyper, chunk) for chunk in plan.chunks]
    parts = [part_program(routine, part_hyper) for part_hyper in layers]
    shapes = [_rows(program, part_hyper) for program, part_hyper in zip(parts, layers)]
    views = [chunk.views for chunk in plan.chunks]
    costs = [_plan_runs(program) if view else _runs(program) for program, view in zip(parts, views)]
    kinds = " / ".join(dict.fromkeys("einsum plan: views" if view else program.strategy
                                     for program, view in zip(parts, views)))
    kernel = None if views[0] else _kernel(parts[0])
    chunked = f" in {len(parts)} chunks" if len(parts) > 1 else ""
    grams = " / ".join(dict.fromkeys(gram.strategy(rows) for rows in shapes))
    return FactorCost(f"patches ({kinds}){chunked} + {grams}", kernel, sum(flops for flops, _ in costs),
                      sum(gram.flops(rows) for rows in shapes), max(largest for _, largest in costs))


def _runs(program: Program) -> tuple[int, int]:
    """FLOPs and largest created tensor (elements) of what a call of ``program`` runs: its native kernel's, else
    its plan's."""
    kernel = program.kernel_cost()
    return (kernel.flops, kernel.largest) if kernel is not None else _plan_runs(program)


def _plan_runs(program: Program) -> tuple[int, int]:
    """FLOPs and largest created tensor (elements) of a call of ``program``'s einsum plan."""
    return int(program.flops), int(program.largest_intermediate)


def _kernel(program: Program) -> str | None:
    """The native kernel ``program`` runs (``unfold2d``), or None."""
    return program.strategy.removeprefix("native:") if program.kernel is not None else None


def _rows(program: Program, hyper: ConvHyper) -> tuple[int, int, int, int]:
    """The shape ``(n, G, d, T)`` of the Gram rows that ``patch_rows`` makes of the patches ``program`` computes
    for the chunk ``hyper``."""
    network = program.network
    d = hyper.patch_size
    elements = math.prod(int(network.size(leg)) for leg in network.output)
    return hyper.batch, hyper.groups, d, elements // (hyper.batch * hyper.groups * d)


def _blend(product: torch.Tensor, out: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``out = beta * out + alpha * product`` in place (``product`` a fresh tensor, scaled in place), then ``out``'s
    lower triangle copied from its upper one; ``out`` is not read when ``beta == 0``."""
    product.mul_(alpha)
    if beta == 0.0:
        out.copy_(product)
    else:
        (out if beta == 1.0 else out.mul_(beta)).add_(product)
    mirror(out)
    return out


def _columns(sqrt_ggn: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """Columns ``(M, N, C_out, *O)`` as ``(M, N, G, c, T)`` (a view of contiguous columns)."""
    return sqrt_ggn.reshape(*sqrt_ggn.shape[:2], hyper.groups, sqrt_ggn.shape[2] // hyper.groups, -1)


def diag_ggn_by_columns(x: torch.Tensor, sqrt_ggn: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """``sum_{m,n} J[m,n]^2`` per group, ``J[m,n] = v[m,n] u[n]^T``: ``(G, c, d)``, one batched product per column
    and chunk of samples (``sqrt_ggn``: ``(M, N, C_out, *O)``)."""
    v = _columns(sqrt_ggn, hyper)
    groups, per_group = v.shape[2:4]
    out = None
    for samples, u in patches(x, hyper):
        count, _, d, locations = u.shape
        flat = u.reshape(count * groups, d, locations).mT
        for column in v[:, samples]:
            squares = torch.bmm(column.reshape(count * groups, per_group, locations), flat).square_()
            summed = squares.reshape(count, groups, per_group, d).sum(0)
            out = summed if out is None else out.add_(summed)
    assert out is not None  # a batch holds a sample
    return out


def diag_ggn_by_location_pairs(x: torch.Tensor, sqrt_ggn: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """The same as ``diag_ggn_by_columns`` through the location pairs ``t <= t'``: ``(G, c, d)``."""
    v = _columns(sqrt_ggn, hyper)
    groups, per_group, locations = v.shape[2:]
    first, second = torch.triu_indices(locations, locations, device=x.device)
    weights = torch.where(first == second, 1.0, 2.0).to(v.dtype)
    out = None
    for samples, u in patches(x, hyper, pairs=True):
        count, _, d, _ = u.shape
        part = v[:, samples]
        outer = torch.einsum("mngot,mngos->ngots", part, part)[..., first, second] * weights  # (n, G, c, L)
        pairs = u[..., first] * u[..., second]  # (n, G, d, L)
        left = outer.permute(1, 2, 0, 3).reshape(groups, per_group, -1)
        right = pairs.permute(1, 0, 3, 2).reshape(groups, -1, d)
        out = torch.bmm(left, right) if out is None else out.baddbmm_(left, right)
    assert out is not None  # a batch holds a sample
    return out
