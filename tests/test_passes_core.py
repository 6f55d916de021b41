"""The pass vocabulary: rules, first, sequence, fixpoint (loops, non-convergence), checked, traces."""

from __future__ import annotations

import pytest

from tnconv.ir.names import copy_name, fresh_name
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Identity
from tnconv.ir.verify import InvariantError
from tnconv.passes.core import NoFixpointError, Pass, Record, Trace, checked, first, fixpoint, sequence

NET = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})


def swap(net: Network):
    """A rule that renames i <-> z back and forth (a loop)."""
    old, new = ("i", "z") if "i" in net.sizes else ("z", "i")
    return net.rename({old: new}), Record("swap", (), (old,), "", f"{old} -> {new}")


def grow(net: Network):
    """A rule that always finds something to do (never converges)."""
    leg = net.legs(0)[0]
    return net.rename({leg: leg + "x"}), Record("grow", (net.tensors[0],), (leg,), "always", "rename")


def never(net: Network):
    return None


def rename_j(net: Network):
    if "j" not in net.sizes:
        return None
    return net.rename(j="m"), Record("rename", ("A", "B"), ("j",), "j summed", "j -> m")


def test_record_and_trace_text() -> None:
    record = Record("dense", ("Pi1",), ("i1",), "K=S=4, P=0", "reshape i1 into (o1, k1)")
    assert str(record) == "dense: Pi1 [K=S=4, P=0] -> reshape i1 into (o1, k1)"
    assert str(Record("swap", (), ("i",), "", "i -> z")) == "swap: i -> i -> z"
    assert str(Trace([record, record])) == f"1. {record}\n2. {record}"
    assert str(Trace()) == "(no rewrites)" and Trace([record]).rules() == ("dense",)


def test_passes_return_the_same_object_when_nothing_changes() -> None:
    assert first("never", never)(NET) is NET
    assert first("none", never, never)(NET) is NET
    assert sequence(first("a", never), first("b", never))(NET) is NET
    assert fixpoint(first("none", never))(NET) is NET
    assert checked(first("never", never))(NET) is NET


def test_first_sequence_and_fixpoint_compose_with_traces() -> None:
    once = first("rules", never, rename_j)
    result, trace = fixpoint(once).traced(NET)
    assert result.all_legs == ("i", "m", "k") and trace.rules() == ("rename",)
    both, trace = sequence(once, first("never", never)).traced(NET)
    assert both == result and len(trace) == 1
    assert fixpoint(once)(result) is result


def test_fixpoint_raises_on_a_loop_and_on_non_convergence() -> None:
    with pytest.raises(NoFixpointError, match="loops"):
        fixpoint(first("swap", swap))(NET)
    with pytest.raises(NoFixpointError, match="did not converge in 5 rounds"):
        fixpoint(first("grow", grow), max_rounds=5)(NET)
    with pytest.raises(ValueError, match="max_rounds must be a positive int"):
        fixpoint(first("grow", grow), max_rounds=0)
    with pytest.raises(TypeError, match="fixpoint takes a Pass"):
        fixpoint(grow)


def test_checked_verifies_the_result() -> None:
    def breaks(net: Network):
        bad = Tensor("delta", ("i", "j"), Identity())
        return net.replace(tensors=[*net.entries, bad]), Record("break", ("delta",), (), "", "bad identity")

    with pytest.raises(InvariantError, match="unequal sizes"):
        checked(first("break", breaks))(NET)
    with pytest.raises(TypeError, match="takes a tnconv.Network"):
        first("never", never)("ij")
    with pytest.raises(TypeError, match="sequence takes Pass objects"):
        sequence(never)


def test_fresh_names_number_the_copies() -> None:
    assert fresh_name("n", {"i"}) == "n" and fresh_name("n", {"n", "n_2"}) == "n_3" and fresh_name("n", {"n"}) == "n_2"
    assert copy_name("c_in", 1) == "c_in" and copy_name("c_in", 2) == "c_in_2"
    with pytest.raises(ValueError, match="copy"):
        copy_name("c_in", 0)
    assert isinstance(first("x", never), Pass)


def test_traced_passes_compose_into_a_derivation() -> None:
    import tnconv
    from tnconv.passes import (
        as_pass, differentiate_traced, fuse_traced, restrict_traced, simplify_traced, tie_traced, trace_traced,
        vmap_traced,
    )

    forward = tnconv.conv_network("forward", (2, 3, 8), 4, out_channels=2, stride=4, simplify=False)
    derive = sequence(as_pass(differentiate_traced, "W"), as_pass(vmap_traced, "b", 5, "X"), as_pass(simplify_traced))
    assert derive.name == "sequence(differentiate('W'), vmap('b', 5, 'X'), simplify)"
    result, trace = derive.traced(forward)
    assert trace.rules() == ("differentiate", "vmap", "dense")
    lines = str(trace).splitlines()
    assert lines[0] == (
        "1. differentiate: W [1 occurrence(s) in 1 term(s)] -> remove W; its legs (g, c_out, c_in, k1) "
        "become output legs (g_2, c_out_2, c_in, k1)"
    )
    assert lines[1] == "2. vmap: X [size 5] -> add leg b first to X and the output"
    assert lines[2].startswith("3. dense: Pi1 [K=S=4, P=0, D=1, I%K==0 (I=8=S*O)] -> read i1 as taps (o1, k1) of X")
    assert result.output == ("b", "n", "g", "c_out", "o1", "g_2", "c_out_2", "c_in", "k1")

    gram = Network.from_einsum("ni,mi->nm", "X", "X", sizes={"n": 2, "m": 2, "i": 3})
    summed, trace = differentiate_traced(gram, "X")
    assert str(trace) == (
        "1. differentiate: X [2 occurrence(s) in 1 term(s)] -> remove X; its legs (n, i) become output legs "
        "(n_2, i); product rule: a sum of 2 networks"
    )
    outer = Network.from_einsum("ab,bc->ac", "A", "T", sizes={"a": 2, "b": 2, "c": 2})
    _, trace = fuse_traced(outer, "T", gram)
    assert str(trace).startswith("1. fuse: T [inner output binds n->b, m->c] -> replace 1 occurrence(s) of T by (X, X)")
    assert str(tie_traced(gram, ("n", "m"))[1]) == "1. tie: n, m [size 2] -> one leg n (a diagonal)"
    assert str(trace_traced(gram, "n", "m")[1]) == "1. trace: n, m [output legs of size 2] -> tie n, m and sum over n"
    restricted = str(restrict_traced(gram, "i", slice(1, 3))[1])
    assert restricted == "1. restrict: i [indices 1::1, 2 of 3] -> slice X"
    conv = tnconv.conv_network("forward", (1, 2, 9), 3, out_channels=2, stride=2, simplify=False)
    assert str(restrict_traced(conv, "i1", slice(0, 8, 2))[1]) == (
        "1. restrict: i1 [indices 0::2, 4 of 9] -> slice X; select Pi1 (on i1_full, joined by select_i1)"
    )
    assert str(restrict_traced(conv, "o1", slice(1, 3))[1]) == "1. restrict: o1 [indices 1::1, 2 of 4] -> slice pattern Pi1"
