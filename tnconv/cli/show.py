"""What ``tnconv derive`` shows: the report of a derivation as plain data (``--json``), and as text.

Counts are exact integers printed in full; a figure that may have been
rounded (opt_einsum estimates its costs in floats) is printed as ``about``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from tnconv.cli.arguments import Request

if TYPE_CHECKING:
    from tnconv.cli.derive import Derivation

EXACT_FLOAT_INTEGERS = 2**53  # opt_einsum's cost estimates are floats: integers above this may be rounded


def header(request: Request, out: TextIO) -> None:
    """The first lines: what is derived, for which layer (printed before any heavy import)."""
    print(f"tnconv derive {request.routine}   (conv_network op {request.op!r})", file=out)
    print(f"layer  {request.layer.describe()}", file=out)


def report(derivation: Derivation) -> dict[str, Any]:
    """Everything ``derive`` shows, as JSON-ready data (``--check``/``--bench``/diagram added by the caller)."""
    from tnconv.cli.derive import costs, scaling, what_runs
    from tnconv.cli.symbolic import unfold_based

    program = derivation.program
    return {
        "routine": derivation.routine,
        "op": derivation.op,
        "layer": derivation.layer.as_dict(),
        "stages": [
            {
                "title": stage.title,
                "network": stage.network.dump(),
                "einsum": stage.network.to_einsum(),
                "rewrites": list(stage.rewrites) if stage.rewrites is not None else None,
            }
            for stage in derivation.stages
        ],
        "einsum": program.equation,
        "output": list(derivation.network.output),
        "operands": list(program.operands),
        **what_runs(program),
        "scaling": scaling(derivation),
        "costs": costs(derivation),
        **({} if derivation.layer.concrete else {"unfold_based": unfold_based(derivation)}),
    }


def count(value: int, exact: bool = True) -> str:
    """``1,234,567`` for an exact count; ``about 1.23e+20`` for one that may be float-rounded."""
    return f"{value:,}" if exact else f"about {value:.3g}"


def _shape(shape: list[int]) -> str:
    return "(" + ",".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _elements(number: int) -> str:
    return f"{count(number)} element" + ("" if number == 1 else "s")


def stages(data: dict[str, Any], out: TextIO) -> None:
    """The networks of the derivation, each pass with the rewrites it made."""
    for number, stage in enumerate(data["stages"], 1):
        print(f"\n== {number}. {stage['title']} ==", file=out)
        if stage["rewrites"] is not None:
            print("rewrites:", file=out)
            lines = stage["rewrites"] or ["(none: nothing to rewrite)"]
            for index, line in enumerate(lines, 1):
                print(f"  {index}. {line}" if stage["rewrites"] else f"  {line}", file=out)
            print("network after the pass:", file=out)
        print(stage["network"], file=out)


def steps(table: list[dict[str, Any]], indent: str, out: TextIO) -> None:
    """The per-step table: FLOPs, result size and the contraction in leg names (``Program.path_info``)."""
    from tnconv.lower.path_info import StepInfo, format_table

    rows = tuple(StepInfo(row["equation"], row["flops"], row["size"]) for row in table)
    for line in format_table(rows).splitlines():
        print(f"{indent}{line}", file=out)


def _plan(plan: dict[str, Any], indent: str, out: TextIO) -> None:
    print(f"{indent}path      {plan['path']}", file=out)
    steps(plan["table"], indent + "  ", out)
    estimate = "" if plan["flops_exact"] else " (opt_einsum's float estimate, rounded)"
    print(f"{indent}flops     {count(plan['flops'], plan['flops_exact'])} ({plan['flops']:.3g}){estimate}", file=out)
    largest = count(plan["largest_intermediate"], plan["largest_intermediate_exact"])
    print(f"{indent}largest intermediate  {largest} elements", file=out)


def compiled(data: dict[str, Any], out: TextIO) -> None:
    """The compiled program: the statistics of what runs, and the einsum plan (labelled when it does not run)."""
    print("\n== compiled ==", file=out)
    print(f"einsum    {data['einsum']}", file=out)
    print(f"output    ({', '.join(data['output'])})", file=out)
    print(f"operands  {', '.join(data['operands'])}", file=out)
    kernel, plan = data["kernel"], data["einsum_plan"]
    if data.get("symbolic"):
        from tnconv.cli.symbolic import show_symbolic

        show_symbolic(data, out)
        return
    if data["strategy"] == "pair_gram":
        print("strategy  pair_gram: windowed cross-correlations (aten.convolution_backward with the layer's stride,",
              file=out)
        print("          one call per product of segments of stride phases of the padded input) for the two index",
              file=out)
        print("          patterns of each dim that share their summed o", file=out)
        print(f"flops     {count(data['flops'])} ({data['flops']:.3g}; 2 per multiply-add, exact)", file=out)
        print(f"          {data['flops'] / data['gram_flops']:.3g}x the im2col Gram's {count(data['gram_flops'])}, "
              f"in {data['calls']:,} weight-VJP calls", file=out)
        print(f"largest intermediate  {_elements(data['largest_intermediate'])}", file=out)
        print("einsum plan (not run; the gather/Gram path it replaces):", file=out)
        _plan(plan, "  ", out)
        return
    if kernel is None:
        print(f"strategy  {data['strategy']}: pairwise steps along the contraction path", file=out)
        _plan(plan, "", out)
        return
    print(f"strategy  {data['strategy']}: one PyTorch kernel computes the whole network", file=out)
    for index, tensor in enumerate(kernel["created"]):
        label = "creates" if index == 0 else ""
        print(f"{label:<10}{tensor['op']} {_shape(tensor['shape'])}: {_elements(tensor['elements'])}", file=out)
    if not kernel["created"]:
        print("creates   nothing (its result is a view of the input)", file=out)
    what = "2 per multiply-add" if kernel["flops"] else "no multiply-adds: it copies (and adds)"
    print(f"flops     {count(kernel['flops'])} ({kernel['flops']:.3g}; {what})", file=out)
    print(f"largest tensor created  {_elements(kernel['largest'])}", file=out)
    print("einsum plan (not run; what the network would cost without the kernel):", file=out)
    _plan(plan, "  ", out)


def _number(numerator: int, divisor: int) -> str:
    """``1/52,488``, ``3/4`` or ``2``."""
    if divisor == 1:
        return f"{numerator:,}"
    return f"{numerator:,}/{divisor:,}"


def scaling(data: dict[str, Any], out: TextIO) -> None:
    """How the network's unnormalised sum becomes the routine's value, with this layer's numbers."""
    scale = data["scaling"]
    if scale is None:
        return
    if scale.get("symbolic"):
        print(f"\n== {scale['title']} ==", file=out)
        print(f"the network computes {scale['computes']}, a sum without normalisation;", file=out)
        print(f"{scale['title']} is it times {scale['formula']} = {scale['value']}", file=out)
        print(f"reshaped from ({', '.join(scale['network_output'])}) to {scale['layout']}", file=out)
        return
    counts = ", ".join(f"{name} = {item['value']:,} {item['counts']}" for name, item in scale["quantities"].items())
    shape = ", ".join(f"{size:,}" for size in scale["shape"])
    where = f" with {scale['where']}" if scale["where"] else ""
    print(f"\n== {scale['title']} ==", file=out)
    print(f"the network computes {scale['computes']}, a sum without normalisation;", file=out)
    print(f"{scale['title']} is it times {scale['formula']} = {scale['substituted']} = "
          f"{_number(scale['numerator'], scale['divisor'])}" + (f" ({counts})," if counts else ","), file=out)
    print(f"reshaped from ({', '.join(scale['network_output'])}) to {scale['layout']} = ({shape}){where}", file=out)
    if scale["function"]:
        print(f"({scale['function']} returns it so)", file=out)


def costs(data: dict[str, Any], out: TextIO) -> None:
    """The two evaluations of a routine whose shortcut pays on some layers only, their cost formulas (multiply-adds)
    with this layer's numbers, and the one that runs."""
    forms = data["costs"]
    if forms is None:
        return
    print("\n== which evaluation runs (multiply-adds) ==", file=out)
    for name in ("shortcut", "network"):
        form = forms[name]
        value = form["value"] if forms["symbolic"] else count(form["value"])
        print(f"{name:<9} {form['formula']} = {value}", file=out)
        print(f"{'':<9} {form['form']}", file=out)
    if forms["runs"] is None:
        print("runs      the cheaper one for the sizes it is called with", file=out)
    else:
        print(f"runs      the {'shortcut' if forms['runs'] == 'shortcut' else 'whole network'} "
              f"(tnconv.routines.run_routine and the routine's function)", file=out)


def check(result: dict[str, Any], out: TextIO) -> None:
    print(f"\n== check (float64, rtol {result['rtol']:g}, shape {tuple(result['shape'])}) ==", file=out)
    print("PASSED" if result["passed"] else "FAILED", file=out)
    for comparison in result["comparisons"]:
        against = f"vs {comparison['against']}"
        if comparison["passed"] is None:
            print(f"  skipped {against:<16} {comparison['skipped']}", file=out)
            continue
        verdict = "passed " if comparison["passed"] else "FAILED "
        print(f"  {verdict} {against:<16} max |error| {comparison['max_abs_error']:.3g} "
              f"(max |reference| {comparison['max_abs_reference']:.3g})", file=out)


def _calls(number: int) -> str:
    return f"{number} call" + ("" if number == 1 else "s")


def bench(result: dict[str, Any], out: TextIO) -> None:
    print(f"\n== bench ({result['dtype']}, {result['threads']} threads; {result['warmup']} warm-up calls, then "
          f"{result['repeats']} interleaved rounds of {_calls(result['calls_per_sample'])} per side) ==", file=out)
    print(f"{'ms per call':<12}{'min':>12}{'median':>12}{'max':>12}", file=out)
    for side in ("tnconv", "pytorch"):
        times = result[side]
        print(f"{side:<12}" + "".join(f"{times[key] * 1e3:>12.4g}" for key in ("min", "median", "max")), file=out)
    paired = result["paired_ratio"]
    print(f"ratio       {result['ratio']:.3g}x (tnconv / pytorch medians; paired rounds {paired['min']:.3g}x "
          f"to {paired['max']:.3g}x); below 1: tnconv is faster", file=out)
