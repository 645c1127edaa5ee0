"""`driftgate migrate ...`: the operator's side of a migration, over the admin API."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

from tqdm import tqdm

from gateway.commands.adapter import cmd_adapter

# phases where the migration waits for the operator: `status --watch` stops there by itself
WAITS_FOR_OPERATOR = ("ready", "shadow", "cutover")


class AdminError(RuntimeError):
    pass


class AdminClient:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token or ''}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                raise AdminError(f"{exc.code} {error['code']}: {error['message']}") from None
            except (ValueError, KeyError):
                raise AdminError(f"HTTP {exc.code} from {self.url}{path}") from None
        except urllib.error.URLError as exc:
            raise AdminError(
                f"cannot reach the gateway at {self.url} ({exc.reason}); is `driftgate serve` running? pass --url"
            ) from None


def _path(collection: str, action: str) -> str:
    return f"/admin/v1/collections/{collection}/{action}"


def run(args) -> int:
    token = os.environ.get("DRIFTGATE_ADMIN_TOKEN")
    if not token:
        print("driftgate: set DRIFTGATE_ADMIN_TOKEN to the gateway's admin token", file=sys.stderr)
        return 2
    client = AdminClient(args.url, token)
    try:
        return _ACTIONS[args.migrate_command](client, args)
    except AdminError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1


def _status(client: AdminClient, args) -> dict:
    return client.call("GET", _path(args.collection, "status"))


def cmd_start(client: AdminClient, args) -> int:
    state = client.call("POST", _path(args.collection, "migrations"), {"to_model": args.to})
    print(
        f"migration started: {args.collection} {state['from_model']} -> {state['to_model']}; "
        f"every write now goes to both; backfill running (phase {state['phase']}, "
        f"state_version {state['state_version']})"
    )
    print(f"watch it: driftgate migrate status {args.collection} --watch")
    return 0


def cmd_plan(client: AdminClient, args) -> int:
    body: dict = {"to_model": args.to}
    if args.sample:
        body["sample"] = args.sample
    plan = client.call("POST", _path(args.collection, "migrations/plan"), body)
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    print(format_plan(plan))
    return 0


def format_plan(plan: dict) -> str:
    cost = (
        f"${plan['cost']:.4f} at ${plan['price_per_million_tokens']}/M tokens"
        if plan["cost"] is not None
        else "no price set (price_per_million_tokens)"
    )
    return "\n".join(
        [
            f"plan: {plan['collection']} {plan['from_model']} -> {plan['to_model']} (nothing written)",
            f"  documents   {plan['documents']} ({plan['characters']} characters)",
            f"  tokens      ~{plan['tokens']} (scaled from {plan['sample_tokens']} tokens of a {plan['sample']}-document "
            f"sample embedded in {plan['sample_seconds']:.2f} s)",
            f"  time        ~{plan['estimated_seconds']:.0f} s of backfill at the sample's rate and the rate limits",
            f"  cost        {cost}",
            f"  start it:   driftgate migrate start {plan['collection']} --to {plan['to_model']}",
        ]
    )


def cmd_status(client: AdminClient, args) -> int:
    if args.json:
        print(json.dumps(_status(client, args), indent=2))
        return 0
    if not args.watch:
        print(format_status(_status(client, args)))
        return 0
    tty = sys.stdout.isatty()
    shown = 0
    try:
        while args.count is None or shown < args.count:
            status = _status(client, args)
            sys.stdout.write(("\x1b[H\x1b[2J" if tty else "") + format_status(status) + "\n")
            sys.stdout.flush()
            shown += 1
            reason = watch_done(status, args.until)
            if reason:
                print(f"stopped watching: {reason}")
                return 0
            if args.count is None or shown < args.count:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return 0


def watch_done(status: dict, until: str | None) -> str | None:
    """Why `status --watch` should stop now, or None: the phase asked for, or (without
    --until) a state where nothing moves until the operator acts."""
    phase, backfill = status["phase"], status["backfill"]
    if until is not None:
        return f"phase {phase}" if phase == until else None
    if backfill.get("state") in ("paused", "failed"):
        return f"the backfill is {backfill['state']}; next: {next_step(status)}"
    if phase in WAITS_FOR_OPERATOR:
        return f"phase {phase} waits for you; next: {next_step(status)}"
    return None


def format_status(status: dict) -> str:
    lines = [
        f"collection {status['name']}: phase {status['phase']}, reads {status['read_model']}, "
        f"writes {', '.join(status['write_models'])} (state_version {status['state_version']})",
    ]
    for key, model in status["models"].items():
        flags = [
            f"{model['coverage']:.2%} covered",
            f"{model['missing']} missing",
            f"{model['stale']} stale",
            "index ready" if model["index_ready"] else "index not built",
            "verified" if model["verified"] else "not verified",
        ]
        lines.append(f"  {key:<24} {model['rows']:>9} rows  " + ", ".join(flags))
    backfill = status["backfill"]
    if backfill.get("model"):
        lines.append("  " + format_backfill(backfill))
        if backfill.get("index_build"):
            build = backfill["index_build"]
            lines.append(f"  index build: {build['phase']} ({build['blocks_done']}/{build['blocks_total']} blocks)")
    if status.get("adoption"):
        from gateway.commands.adopt import format_adoption

        lines.append(format_adoption(status["adoption"]))
    shadow = status["shadow"]
    if shadow.get("model"):
        lines.append(f"  shadow {shadow['model']} at {shadow['sample_rate']:.0%}")
    current = status["state_version"]
    for replica in status["replicas"]:
        lines.append(f"  replica {replica['id']:<32} " + format_replica(replica, current))
    lines.append("  next: " + next_step(status))
    return "\n".join(lines)


def format_backfill(backfill: dict) -> str:
    """One line: state, bar, counts, and a rate and ETA only while documents are moving."""
    done, total = backfill["done"], backfill["total"]
    bar = tqdm.format_meter(done, max(total, 1), 0, ncols=32, bar_format="|{bar}|")
    line = f"backfill {backfill['state']:<8} {bar} {done}/{total}"
    if backfill["state"] == "running" and done < total:
        eta = f"{backfill['eta_s']:.0f}s" if backfill.get("eta_s") is not None else "?"
        cap = f" (max {backfill['max_rate']:.0f}/s)" if backfill.get("max_rate") else ""
        line += f" {backfill['rate_per_s']:.0f}/s{cap} eta {eta}"
    return line + f", errors {backfill['errors']}"


def format_replica(replica: dict, current: int) -> str:
    """Applied state version, whether it has converged, and how long ago it reported."""
    applied = replica["applied_state_version"]
    if applied == current:
        mark = "ok"
    elif replica.get("seen_s_ago", 0.0) < 5.0:
        mark = f"converging (state_version {current} announced, applies within a poll interval)"
    else:
        mark = "BEHIND (not converged; is it running and connected to the database?)"
    return f"applied {applied} {mark}, seen {replica.get('seen_s_ago', 0.0):.0f}s ago"


def next_step(status: dict) -> str:
    """What an operator would do next, from the phase and the numbers."""
    name, phase, target = status["name"], status["phase"], status.get("to_model")
    backfill_state = status["backfill"].get("state")
    if backfill_state in ("paused", "failed"):
        why = "paused" if backfill_state == "paused" else "failed for some documents (see errors above)"
        return f"the backfill {why}: driftgate migrate backfill {name} resume"
    if phase == "steady":
        return f"driftgate migrate start {name} --to MODEL"
    if phase == "dual_write":
        return "wait for the backfill (it moves the collection to ready), or `driftgate migrate abort " + name + "`"
    if phase in ("ready", "shadow") and status["read_model"] != target:
        if target and not status["models"].get(target, {}).get("verified"):
            return f"driftgate migrate verify {name}"
        return f"driftgate migrate cutover {name} (optionally shadow first: driftgate migrate shadow {name})"
    if phase == "cutover":
        return f"check quality, then driftgate migrate retire {name} (or rollback {name})"
    return f"driftgate migrate status {name}"


def cmd_shadow(client: AdminClient, args) -> int:
    body = {"model": None if args.off else args.model, "sample_rate": 0.0 if args.off else args.rate}
    if not args.off and not args.model:
        status = _status(client, args)
        body["model"] = status["to_model"] if status["read_model"] != status["to_model"] else status["from_model"]
    state = client.call("POST", _path(args.collection, "shadow"), body)
    print(f"shadow: {state['shadow_model'] or 'off'} at {state['shadow_sample_rate']:.0%} (phase {state['phase']})")
    return 0


def _switch(client: AdminClient, args, model: str, force: bool) -> int:
    state = client.call("POST", _path(args.collection, "read-model"), {"model": model, "force": force})
    print(
        f"{args.collection} now reads {state['read_model']} (phase {state['phase']}, "
        f"state_version {state['state_version']})"
    )
    return 0


def cmd_cutover(client: AdminClient, args) -> int:
    model = args.model or _status(client, args)["to_model"]
    if not model:
        raise AdminError("no migration in flight: nothing to cut over to")
    return _switch(client, args, model, args.force)


def cmd_rollback(client: AdminClient, args) -> int:
    model = _status(client, args)["from_model"]
    if not model:
        raise AdminError("no migration in flight: nothing to roll back to")
    return _switch(client, args, model, False)


def cmd_verify(client: AdminClient, args) -> int:
    report = client.call("POST", _path(args.collection, "verify"), {"sample": args.sample})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, model in report["models"].items():
            cosine = (
                f"re-embed cosine min {model['cosine_min']:.6f} mean {model['cosine_mean']:.6f} over {model['sampled']}"
                if model["sampled"]
                else "nothing sampled"
            )
            print(
                f"{'PASS' if model['passed'] else 'FAIL'} {key}: {model['documents']} documents, "
                f"{model['rows']} rows, {model['missing']} missing, {model['stale']} stale; {cosine} "
                f"(threshold {model['threshold']}); probes {'ok' if model['probe_ok'] else model['probe_problem']}"
            )
            for label in ("missing_ids", "stale_ids", "below_threshold_ids"):
                if model[label]:
                    print(f"    {label}: {', '.join(model[label])}")
        print("verification " + ("passed" if report["passed"] else "FAILED"))
    return 0 if report["passed"] else 1


def cmd_retire(client: AdminClient, args) -> int:
    model = args.model or _status(client, args)["from_model"]
    if not model:
        raise AdminError("no migration in flight: name the model with --model")
    state = client.call("POST", _path(args.collection, "retire"), {"model": model})
    print(
        f"retired {model}: {'table dropped' if state['changed'] else 'already retired'}; "
        f"{args.collection} is {state['phase']} on {state['read_model']}"
    )
    return 0


def cmd_abort(client: AdminClient, args) -> int:
    state = client.call("POST", _path(args.collection, "abort"))
    print(
        f"{'aborted' if state['changed'] else 'nothing to abort'}: {args.collection} is {state['phase']} "
        f"on {state['read_model']}"
    )
    return 0


def cmd_backfill(client: AdminClient, args) -> int:
    body: dict = {"action": args.action}
    if args.max_rate is not None:
        body["max_rate"] = None if args.max_rate <= 0 else args.max_rate
    result = client.call("POST", _path(args.collection, "backfill"), body)
    print(f"backfill {result['state']}, max rate {result['max_rate'] or 'unlimited'}")
    return 0


_ACTIONS = {
    "start": cmd_start,
    "plan": cmd_plan,
    "status": cmd_status,
    "shadow": cmd_shadow,
    "cutover": cmd_cutover,
    "rollback": cmd_rollback,
    "verify": cmd_verify,
    "retire": cmd_retire,
    "abort": cmd_abort,
    "backfill": cmd_backfill,
    "adapter": cmd_adapter,
}
