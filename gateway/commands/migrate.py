"""`driftgate migrate ...`: the operator's side of a migration, over the admin API."""

from __future__ import annotations

import json
import sys
import time

from gateway.client import KEEP, Client
from gateway.client.errors import DriftgateError, IllegalTransition
from gateway.commands.adapter import cmd_adapter
from gateway.commands.status_view import format_status, next_step
from gateway.config import admin_token_from_env

# phases where the migration waits for the operator: `status --watch` stops there by itself
WAITS_FOR_OPERATOR = ("ready", "shadow", "cutover")


def _no_migration(what: str) -> IllegalTransition:
    return IllegalTransition(409, "illegal_transition", f"no migration in flight: {what}")


def run(args) -> int:
    token = admin_token_from_env()
    if not token:
        print("driftgate: set DRIFTGATE_ADMIN_TOKEN to the gateway's admin token", file=sys.stderr)
        return 2
    try:
        with Client(args.url, admin_token=token, timeout=120.0) as client:
            return _ACTIONS[args.migrate_command](client, args)
    except DriftgateError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 1


def _status(client: Client, args) -> dict:
    return dict(client.status(args.collection).raw)


def cmd_start(client: Client, args) -> int:
    state = client.start_migration(args.collection, args.to, args.storage)
    print(
        f"migration started: {args.collection} {state.from_model} -> {state.to_model}; "
        f"every write now goes to both; backfill running (phase {state.phase}, "
        f"state_version {state.state_version})"
    )
    print(f"watch it: driftgate migrate status {args.collection} --watch")
    return 0


def cmd_plan(client: Client, args) -> int:
    plan = dict(client.plan(args.collection, args.to, args.sample or None).raw)
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


def cmd_status(client: Client, args) -> int:
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


def cmd_shadow(client: Client, args) -> int:
    model: str | None = None if args.off else args.model
    if not args.off and not args.model:
        status = _status(client, args)
        model = status["to_model"] if status["read_model"] != status["to_model"] else status["from_model"]
    state = client.shadow(args.collection, model, 0.0 if args.off else args.rate)
    print(f"shadow: {state.shadow_model or 'off'} at {state.shadow_sample_rate:.0%} (phase {state.phase})")
    return 0


def _switch(client: Client, args, model: str, force: bool) -> int:
    state = client.cutover(args.collection, model, force)
    print(f"{args.collection} now reads {state.read_model} (phase {state.phase}, state_version {state.state_version})")
    return 0


def cmd_cutover(client: Client, args) -> int:
    model = args.model or _status(client, args)["to_model"]
    if not model:
        raise _no_migration("nothing to cut over to")
    return _switch(client, args, model, args.force)


def cmd_rollback(client: Client, args) -> int:
    model = _status(client, args)["from_model"]
    if not model:
        raise _no_migration("nothing to roll back to")
    return _switch(client, args, model, False)


def cmd_verify(client: Client, args) -> int:
    report = dict(client.verify(args.collection, args.sample).raw)
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


def cmd_retire(client: Client, args) -> int:
    model = args.model or _status(client, args)["from_model"]
    if not model:
        raise _no_migration("name the model with --model")
    state = client.retire(args.collection, model)
    print(
        f"retired {model}: {'table dropped' if state.changed else 'already retired'}; "
        f"{args.collection} is {state.phase} on {state.read_model}"
    )
    return 0


def cmd_abort(client: Client, args) -> int:
    state = client.abort(args.collection)
    print(
        f"{'aborted' if state.changed else 'nothing to abort'}: {args.collection} is {state.phase} "
        f"on {state.read_model}"
    )
    return 0


def cmd_backfill(client: Client, args) -> int:
    max_rate = KEEP if args.max_rate is None else (None if args.max_rate <= 0 else args.max_rate)
    result = client.backfill(args.collection, args.action, max_rate)
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
