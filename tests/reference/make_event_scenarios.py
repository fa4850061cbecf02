"""Generate tests/reference/event_scenarios.csv from event_scenarios.json.

An independent reference for il2pkpd's event engine: a plain sequential discrete-event
simulator of NONMEM semantics, written without any il2pkpd code. Linear models are propagated
exactly with the matrix exponential (``scipy.linalg.expm`` of the rate matrix augmented with
the constant infusion input). Steady state is simulated, not summed: ``N_PAST`` dosing
intervals from an empty system before the SS record. Run from the repository root:

    .venv/bin/python tests/reference/make_event_scenarios.py

The CSV is committed; tests/test_engine_reference.py checks the engine against it, so any
change of the engine that alters an event semantic shows up as a failing row.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from scipy.linalg import expm

HERE = Path(__file__).resolve().parent
N_PAST = 400


def rate_matrix(model: str, p: dict) -> tuple[np.ndarray, dict[int, int], int, float]:
    """Rate matrix K (dA/dt = K A), NONMEM cmt -> state index, central index, central volume."""
    if model in ("one_cmt_iv", "one_cmt_oral"):
        v = p["V"]
        disp = np.array([[-p["CL"] / v]])
        vc = v
    elif model in ("two_cmt_iv", "two_cmt_oral"):
        v1, v2, q = p["V1"], p["V2"], p["Q"]
        disp = np.array([[-(p["CL"] + q) / v1, q / v2], [q / v1, -q / v2]])
        vc = v1
    elif model == "three_cmt_iv":
        v1, v2, v3, q2, q3 = p["V1"], p["V2"], p["V3"], p["Q2"], p["Q3"]
        disp = np.array([[-(p["CL"] + q2 + q3) / v1, q2 / v2, q3 / v3],
                         [q2 / v1, -q2 / v2, 0.0],
                         [q3 / v1, 0.0, -q3 / v3]])
        vc = v1
    else:
        raise ValueError(model)
    n = disp.shape[0]
    if model.endswith("_oral"):
        k = np.zeros((n + 1, n + 1))
        k[0, 0] = -p["KA"]
        k[1, 0] = p["KA"]
        k[1:, 1:] = disp
        return k, {i + 1: i for i in range(n + 1)}, 1, vc
    return disp, {i + 1: i for i in range(n)}, 0, vc


class Simulator:
    """Sequential NONMEM-style simulation of one subject of a linear model."""

    def __init__(self, model: str, p: dict):
        self.K, self.cmt_index, self.central, self.vc = rate_matrix(model, p)
        self.p = p
        self.n = self.K.shape[0]
        self.reset_state(0.0)

    def reset_state(self, t: float) -> None:
        self.t = t
        self.a = np.zeros(self.n)
        self.rate = np.zeros(self.n)
        self.pending: list[tuple[float, int, str, int, float]] = []  # time, seq, kind, cmt, value
        self.seq = 0

    def _propagate(self, t1: float) -> None:
        dt = t1 - self.t
        if dt > 0:
            aug = np.zeros((self.n + 1, self.n + 1))
            aug[:self.n, :self.n] = self.K
            aug[:self.n, self.n] = self.rate
            e = expm(aug * dt)
            self.a = e[:self.n, :self.n] @ self.a + e[:self.n, self.n]
        self.t = t1

    def advance(self, t1: float) -> None:
        """Apply pending actions with time <= t1 in time order, then propagate to t1."""
        while True:
            due = [x for x in self.pending if x[0] <= t1]
            if not due:
                break
            nxt = min(due, key=lambda x: (x[0], x[1]))
            self.pending.remove(nxt)
            self._propagate(nxt[0])
            tm, _, kind, idx, val = nxt
            if kind == "bolus":
                self.a[idx] += val
            else:
                self.rate[idx] += val
        self._propagate(t1)

    def schedule(self, t: float, kind: str, idx: int, val: float) -> None:
        self.pending.append((t, self.seq, kind, idx, val))
        self.seq += 1

    def dose(self, t: float, cmt: int, amt: float, rate: float) -> None:
        lag = self.p.get(f"TLAG{cmt}", 0.0)
        f = self.p.get(f"F{cmt}", 1.0)
        idx = self.cmt_index[cmt]
        if rate == -1:
            rate = self.p[f"R{cmt}"]
            dur = f * amt / rate
        elif rate == -2:
            dur = self.p[f"D{cmt}"]
            rate = f * amt / dur
        elif rate > 0:
            dur = f * amt / rate
        else:
            self.schedule(t + lag, "bolus", idx, f * amt)
            return
        self.schedule(t + lag, "rate", idx, rate)
        self.schedule(t + lag + dur, "rate", idx, -rate)

    def steady_state_part(self, t: float, cmt: int, amt: float, rate: float, ii: float):
        """State and pending actions at t after N_PAST intervals of this dose from empty."""
        sub = Simulator.__new__(Simulator)
        sub.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k in ("K", "cmt_index", "central", "vc", "p", "n")})
        if amt == 0 and rate > 0:        # constant infusion: exact steady state
            sub.reset_state(t)
            idx = self.cmt_index[cmt]
            r = np.zeros(self.n)
            r[idx] = rate
            sub.a = np.linalg.solve(self.K, -r)
            sub.rate = r
            return sub
        sub.reset_state(t - N_PAST * ii)
        for k in range(N_PAST, 0, -1):
            sub.advance(t - k * ii)
            sub.dose(t - k * ii, cmt, amt, rate)
        sub.advance(t)
        return sub

    def conc(self) -> float:
        return self.a[self.central] / self.vc


def _is_reset(r: dict) -> bool:
    return r["EVID"] in (3, 4) or (r["EVID"] in (1, 4) and r.get("SS", 0) == 1)


def expand(records: list[dict]) -> list[dict]:
    """ADDL -> explicit doses, each given before any record at the same time; an implied dose
    that a later reset (EVID 3/4, SS=1) precedes is cancelled."""
    inserts: dict[int, list[dict]] = {}
    for i, r in enumerate(records):
        for k in range(1, r.get("ADDL", 0) + 1):
            t = r["TIME"] + k * r["II"]
            pos = next((j for j in range(i + 1, len(records)) if records[j]["TIME"] >= t),
                       len(records))
            if any(_is_reset(x) for x in records[i + 1:pos + 1]):
                continue
            inserts.setdefault(pos, []).append(dict(r, TIME=t, ADDL=0, SS=0, EVID=1))
    out = []
    for j in range(len(records) + 1):
        out.extend(sorted(inserts.get(j, []), key=lambda x: x["TIME"]))
        if j < len(records):
            out.append(records[j])
    return out


def simulate(model: str, params: dict, records: list[dict]) -> list[tuple[float, float]]:
    """(TIME, concentration) for each observation record."""
    sim = Simulator(model, params)
    out = []
    recs = expand(records)
    for r in recs:
        t = r["TIME"]
        evid = r["EVID"]
        ss = r.get("SS", 0)
        if evid in (3, 4) or (evid in (1, 4) and ss == 1):
            sim.reset_state(t)
        else:
            sim.advance(t)
        if evid == 0:
            out.append((t, sim.conc()))
        elif evid in (1, 4):
            cmt, amt, rate = r["CMT"], r["AMT"], r.get("RATE", 0.0)
            if ss in (1, 2):
                part = sim.steady_state_part(t, cmt, amt, rate, r.get("II", 0.0))
                sim.a = sim.a + part.a
                sim.rate = sim.rate + part.rate
                for x in part.pending:
                    sim.schedule(x[0], x[2], x[3], x[4])
            if not (amt == 0 and rate > 0):
                sim.dose(t, cmt, amt, rate)
    return out


def main() -> None:
    scenarios = json.loads((HERE / "event_scenarios.json").read_text())
    rows = []
    for sc in scenarios:
        recs = [dict({"AMT": 0.0, "RATE": 0.0, "II": 0.0, "ADDL": 0, "SS": 0, "CMT": 1}, **r)
                for r in sc["records"]]
        for t, c in simulate(sc["model"], sc["params"], recs):
            rows.append((sc["name"], t, c))
    with open(HERE / "event_scenarios.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scenario", "TIME", "expected"])
        for name, t, c in rows:
            w.writerow([name, repr(float(t)), repr(float(c))])
    print(f"wrote {len(rows)} rows for {len(scenarios)} scenarios")


if __name__ == "__main__":
    main()
