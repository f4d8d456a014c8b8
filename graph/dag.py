"""The workflow as a graph: cycles, what the requested outputs need, and the order to run it in."""
from __future__ import annotations

from typing import Iterable

import networkx as nx


def build(node_ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> nx.DiGraph:
    """A DiGraph with an edge ``upstream -> downstream`` per link (file order kept as 'index')."""
    g = nx.DiGraph()
    for i, nid in enumerate(node_ids):
        g.add_node(nid, index=i)
    g.add_edges_from(edges)
    return g


def cycles(g: nx.DiGraph) -> list[list[str]]:
    """One cycle per strongly connected knot, as the list of its nodes in link order."""
    found = []
    for comp in nx.strongly_connected_components(g):
        if len(comp) == 1:
            (n,) = comp
            if not g.has_edge(n, n):
                continue
        sub = g.subgraph(comp)
        start = min(comp, key=lambda n: g.nodes[n].get("index", 0))
        found.append([u for u, _ in nx.find_cycle(sub, source=start)])
    return sorted(found, key=lambda c: g.nodes[c[0]].get("index", 0))


def needed(g: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """The targets and everything upstream of them."""
    keep: set[str] = set()
    for t in targets:
        if t not in keep:
            keep.add(t)
            keep |= nx.ancestors(g, t)
    return keep


def order(g: nx.DiGraph, keep: Iterable[str] | None = None) -> list[str]:
    """Topological order; ties keep the order of the file, so runs are predictable."""
    sub = g if keep is None else g.subgraph(keep)
    return list(nx.lexicographical_topological_sort(sub, key=lambda n: g.nodes[n].get("index", 0)))
