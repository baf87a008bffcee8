"""The monitor answer as plain text for a terminal (``pneumo audit monitor``): alarms first."""

from __future__ import annotations


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_summary(s: dict) -> str:
    o, ref = s["overall"], s["reference"]
    lines = [f"model {s['model']['name']} ({(s['model']['sha256'] or '?')[:12]}) · since {s['since']}"
             + (f" until {s['until']}" if s["until"] else "")]
    if s["alarms"]:
        lines.append(f"ALARM ({len(s['alarms'])}):")
        lines += [f"  ! {a['message']}" for a in s["alarms"]]
    else:
        lines.append("no alarm")
    lines += [f"  note: {n}" for n in s["notes"]]
    ref_pos = f" (validation {_rate(ref['positive_rate'])})" if ref and ref.get("positive_rate") is not None else ""
    lines += [
        f"requests {o['requests']} ({o['images']} images) · errors {o['errors']} ({_rate(o['error_rate'])})",
        f"refused {_rate(o['refusal_rate'])} · atypical {_rate(o['atypical_rate'])} "
        f"· positive {_rate(o['positive_rate'])}{ref_pos}",
        f"flagged (answered outside the validated population) {o.get('flagged', 0)} "
        f"({_rate(o.get('flagged_rate'))}) · reasons: "
        + (", ".join(f"{k} {v}" for k, v in (o.get("flags_by_reason") or {}).items()) or "none"),
        f"latency p50 {_num(o['latency_p50_ms'], 0)} ms · p95 {_num(o['latency_p95_ms'], 0)} ms",
        f"scores: {o['n_scored']} images · PSI {_num(o['psi'])} · KS {_num(o['ks'])}"
        + (f" (p {o['ks_p']:.3g})" if o["ks_p"] is not None else "")
        + (f" · reference {ref['n']} {ref['split']} images" if ref else " · no reference in the bundle"),
        "",
        f"{s['bucket']:<10} {'requests':>8} {'refused':>8} {'positive':>8} {'errors':>6} {'p95 ms':>7} "
        f"{'PSI':>6} {'KS':>5}  alarms",
    ]
    for b in s["buckets"]:
        lines.append(
            f"{b['start']:<10} {b['requests']:>8} {_rate(b['refusal_rate']):>8} {_rate(b['positive_rate']):>8} "
            f"{b['errors']:>6} {_num(b['latency_p95_ms'], 0):>7} {_num(b['psi'], 2):>6} {_num(b['ks'], 2):>5}  "
            + (", ".join(b["alarms"]) or "-")
        )
    return "\n".join(lines)
