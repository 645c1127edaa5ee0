"""`driftgate migrate adapter fit|show|enable|disable C`: the bridge between a migration's two models.

Kept apart from migrate.py: it only needs the client's adapter calls (gateway/client).
"""

from __future__ import annotations

import json


def format_figures(report: dict) -> str:
    """The held-out figures of both directions, one line each, and whether each passes the floor."""
    lines = [f"adapter version {report['version']} of {report.get('collection', '')}: {report['pairs']} pairs"]
    for direction, meaning in (("adapt", "new-model queries -> old index"), ("translate", "old vectors -> new index")):
        figures = report[direction]
        agreement = next(v for k, v in figures.items() if k.startswith("agreement@"))
        verdict = "passes" if figures["passes"] else "BELOW"
        lines.append(
            f"  {direction:<9} ({meaning}): {figures['kind']}, mean cosine {figures['mean_cosine']:.3f}, "
            f"agreement@10 {agreement:.3f} ({verdict} the floor {report['floor']})"
        )
    return "\n".join(lines)


def cmd_adapter(client, args) -> int:
    """fit: fit on the backfilled pairs; show: the current figures; enable/disable: the `adapted` read mode."""
    if args.verb == "fit":
        report = dict(client.fit_adapter(args.collection, args.max_pairs).raw)
    elif args.verb == "show":
        report = dict(client.adapter(args.collection).raw)
    else:
        mode = "adapted" if args.verb == "enable" else "native"
        state = client.read_mode(args.collection, mode, args.translate_vectors).raw
        print(
            json.dumps(dict(state))
            if args.json
            else f"{args.collection}: read mode {state['read_mode']}, translate vectors {state['translate_vectors']}"
        )
        return 0
    print(json.dumps(report, indent=2) if args.json else format_figures(report))
    if args.verb == "fit" and report["adapt"]["passes"]:
        print(f"serve with it: driftgate migrate adapter enable {args.collection}")
    return 0
