"""`driftgate migrate adapter fit|show|enable|disable C`: the bridge between a migration's two models.

Kept apart from migrate.py: it only needs the admin client's `call(method, path, body)`.
"""

from __future__ import annotations

import json


def _path(collection: str, action: str) -> str:
    return f"/admin/v1/collections/{collection}/{action}"


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
        body = {"max_pairs": args.max_pairs} if args.max_pairs else {}
        report = client.call("POST", _path(args.collection, "adapter"), body)
    elif args.verb == "show":
        report = client.call("GET", _path(args.collection, "adapter"))
    else:
        mode = {"mode": "adapted" if args.verb == "enable" else "native"}
        if args.translate_vectors is not None:
            mode["translate_vectors"] = args.translate_vectors
        state = client.call("POST", _path(args.collection, "read-mode"), mode)
        print(
            json.dumps(state)
            if args.json
            else f"{args.collection}: read mode {state['read_mode']}, translate vectors {state['translate_vectors']}"
        )
        return 0
    print(json.dumps(report, indent=2) if args.json else format_figures(report))
    if args.verb == "fit" and report["adapt"]["passes"]:
        print(f"serve with it: driftgate migrate adapter enable {args.collection}")
    return 0
