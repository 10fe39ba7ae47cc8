"""``--slim``: remove from a layer tree what CPU inference never loads (rules in
:mod:`torchwheel.layer.slimrules`); the RECORD files follow at :meth:`LayerTree.finalize`."""

from __future__ import annotations

from .install import LayerTree
from .report import StepResult
from .slimrules import SlimRule, slim_rule_for, slim_rules

__all__ = ["slim"]


def _slim_plan(tree: LayerTree) -> list[tuple[SlimRule, list[str]]]:
    plan: list[tuple[SlimRule, list[str]]] = [(r, []) for r in slim_rules()]
    index = {r.name: hits for r, hits in plan}
    for rp in tree.files:
        rule = slim_rule_for(rp)
        if rule is not None:
            index[rule.name].append(rp)
    return plan


def slim(tree: LayerTree, *, dry_run: bool = False) -> list[StepResult]:
    """Apply the ``--slim`` rules (see :func:`~torchwheel.layer.slimrules.slim_rules`); the
    results also count what ``LayerTree(slim=True)`` left out while installing.

    With ``dry_run`` nothing is removed: the results say what would be saved.
    """
    results: list[StepResult] = []
    for rule, hits in _slim_plan(tree):
        if dry_run:
            saved = sum(tree.files[rp].size for rp in hits)
        else:
            saved = sum(tree.remove(rp) for rp in hits)
        before = tree.slimmed.get(rule.name, [0, 0])  # left out while installing
        results.append(
            StepResult(
                f"slim: {rule.name}",
                rule.description,
                len(hits) + before[0],
                saved + before[1],
                applied=not dry_run,
            )
        )
    if not dry_run:
        tree.prune_empty_dirs()
    return results
