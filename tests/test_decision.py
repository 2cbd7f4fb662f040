"""The alarm state machine: smoothing, set/clear delays, hysteresis, escalation, latching."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import FixedKernels

from drsn_stream import jit
from drsn_stream.engine.engine import predictions_from
from drsn_stream.errors import ConfigError
from drsn_stream.monitor import decision, decision_jit
from drsn_stream.monitor.decision import DecisionConfig, DecisionEngine, Level
from drsn_stream.train.cwru import LABELS_10
from drsn_stream.types import Prediction, Window, batch_columns
from tests.decision_reference import ReferenceDecisions

BEARING = list(LABELS_10)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, params=["compiled", "numpy", "kernel-as-python"])
def path(request, monkeypatch) -> str:
    """Every test here runs on each way a batch is decided: the compiled kernel (where numba
    is), the numpy steps (where it is not), and the kernel's code run as plain Python (what
    guards its rules where numba is missing)."""
    if request.param == "compiled":
        if decision._kernels.get() is None:
            pytest.skip(f"no compiled decisions here: {decision._kernels.why_not()}")
    else:
        monkeypatch.setattr(decision, "_kernels", FixedKernels(None if request.param == "numpy" else decision_jit._decide_py))
    return request.param


def pred(label: str, conf: float, t: float, *, stream: str = "m0", labels: list[str] = BEARING) -> Prediction:
    """A prediction with ``conf`` on ``label`` and the rest spread evenly."""
    probs = np.full(len(labels), (1.0 - conf) / (len(labels) - 1), dtype=np.float32)
    probs[labels.index(label)] = conf
    return Prediction(stream, int(t), t, probs, label, conf, 0.3, 12.0, level=0.5)


def feed(engine: DecisionEngine, seq: list[tuple[str, float]], *, t0: float = 0.0, healthy: bool = True):
    """Feed (label, conf) pairs one second apart; return [(t, level, events)]."""
    out = []
    for i, (label, conf) in enumerate(seq):
        t = t0 + i
        events = engine.update(pred(label, conf, t), healthy=healthy)
        out.append((t, engine.state("m0").level, events))
    return out


def raw(**kw) -> DecisionConfig:
    """Bearing defaults without smoothing, so each test sees the state machine alone."""
    base = dict(smoothing="ema", ema_alpha=1.0, danger_after_s=None, danger_confidence=None)
    base.update(kw)
    return DecisionConfig.for_labels(BEARING, **base)


def test_set_delay_raises_alert_on_the_nth_consecutive_fault_window():
    engine = DecisionEngine(BEARING, raw(set_windows=3))
    steps = feed(engine, [("inner_007", 0.9)] * 2 + [("normal", 0.9)] + [("inner_007", 0.9)] * 3)
    levels = [lv for _, lv, _ in steps]
    # Two fault windows then a normal one restart the count; the third of the next run raises.
    assert levels == [Level.NORMAL] * 5 + [Level.ALERT]
    events = steps[-1][2]
    assert len(events) == 1
    ev = events[0]
    assert ev.type == "alarm" and ev.stream_id == "m0" and ev.time == 5.0
    assert ev.data == {
        "from": "NORMAL",
        "to": "ALERT",
        "label": "inner_007",
        "confidence": pytest.approx(0.9),
    }


def test_clear_delay_needs_n_consecutive_normal_windows():
    engine = DecisionEngine(BEARING, raw(set_windows=1, clear_windows=4))
    steps = feed(
        engine, [("ball_014", 0.9)] + [("normal", 0.9)] * 3 + [("ball_014", 0.9)] + [("normal", 0.9)] * 4
    )
    levels = [lv.name for _, lv, _ in steps]
    assert levels == ["ALERT"] * 8 + ["NORMAL"]
    cleared = steps[-1][2][0]
    assert (
        cleared.data["from"] == "ALERT"
        and cleared.data["to"] == "NORMAL"
        and cleared.data["label"] == "normal"
    )


def test_hysteresis_enter_and_leave_thresholds():
    engine = DecisionEngine(
        BEARING, raw(set_windows=2, clear_windows=2, enter_confidence=0.7, leave_confidence=0.4)
    )
    # 0.55 is below "enter": a fault this unsure never raises the alarm.
    assert all(lv == Level.NORMAL for _, lv, _ in feed(engine, [("outer_014", 0.55)] * 6))
    feed(engine, [("outer_014", 0.8)] * 2, t0=10)
    assert engine.state("m0").level == Level.ALERT
    # Between leave and enter the alarm holds...
    assert all(lv == Level.ALERT for _, lv, _ in feed(engine, [("outer_014", 0.5)] * 6, t0=20))
    # ...and below leave it clears after the clear delay.
    steps = feed(engine, [("outer_014", 0.35)] * 2, t0=30)
    assert [lv for _, lv, _ in steps] == [Level.ALERT, Level.NORMAL]


def test_danger_from_confidence_and_from_duration():
    engine = DecisionEngine(BEARING, raw(set_windows=2, danger_confidence=0.97))
    steps = feed(engine, [("inner_021", 0.99)] * 2)
    assert steps[-1][1] == Level.DANGER  # a rise settles on the level the whole streak supports

    engine = DecisionEngine(BEARING, raw(set_windows=2, danger_after_s=10.0))
    steps = feed(engine, [("inner_021", 0.8)] * 16)
    names = [lv.name for _, lv, _ in steps]
    assert names[1] == "ALERT"  # alarm episode starts at t=1
    # DANGER once the episode has lasted 10 s (t=11), after the set delay (t=12).
    assert names.index("DANGER") == 12
    changes = [e.data["to"] for _, _, evs in steps for e in evs]
    assert changes == ["ALERT", "DANGER"]


def test_a_sender_clock_set_back_neither_delays_danger_nor_ends_the_episode():
    """A stream's capture times going back an hour (its sender's clock set back by NTP): the
    episode counts the time that passed. Before, DANGER after 10 s of ALERT came an hour late."""
    engine = DecisionEngine(BEARING, raw(set_windows=2, danger_after_s=10.0))
    before = feed(engine, [("inner_021", 0.8)] * 6)  # t = 0..5: ALERT from t = 1
    after = feed(engine, [("inner_021", 0.8)] * 10, t0=6 - 3600.0)  # 6 .. 15 s into the fault
    names = [lv.name for _, lv, _ in before + after]
    assert names[1] == "ALERT"
    # as without the step (12: test_danger_from_confidence_and_from_duration) but for the one
    # window's interval across the step, which is not counted (1 s here, 43 ms in a live stream)
    assert names.index("DANGER") == 13
    state = engine.state("m0")
    assert state.since == pytest.approx(after[names.index("DANGER") - 6][0])  # DANGER since the window that raised it


def test_latching_holds_until_acknowledged():
    engine = DecisionEngine(BEARING, raw(set_windows=1, clear_windows=2, latching=True))
    feed(engine, [("ball_007", 0.9)])
    steps = feed(engine, [("normal", 0.95)] * 5, t0=1)
    assert all(lv == Level.ALERT for _, lv, _ in steps)
    state = engine.state("m0")
    assert state.latched and state.unacknowledged and state.label == "normal"
    events = engine.acknowledge()
    assert [(e.data["from"], e.data["to"], e.data["acknowledged"]) for e in events] == [
        ("ALERT", "NORMAL", True)
    ]
    assert engine.state("m0").level == Level.NORMAL and not engine.state("m0").latched


def test_the_streams_holding_an_alarm_not_yet_acknowledged_are_named_in_one_call():
    engine = DecisionEngine(BEARING, raw(set_windows=1, clear_windows=2, latching=True))
    feed(engine, [("ball_007", 0.9)])
    assert engine.unacknowledged(["m0", "unknown"]) == {"m0"}
    engine.acknowledge("m0")
    assert engine.unacknowledged(["m0"]) == set()


def test_acknowledged_active_alarm_clears_by_itself_and_new_danger_latches_again():
    engine = DecisionEngine(
        BEARING, raw(set_windows=1, clear_windows=1, latching=True, danger_labels=("*_021",))
    )
    feed(engine, [("ball_007", 0.9)])
    assert engine.acknowledge("m0") == []  # still active: nothing to clear yet
    assert not engine.state("m0").unacknowledged
    feed(engine, [("ball_021", 0.9)], t0=1)  # worse: needs its own acknowledgement
    assert engine.state("m0").level == Level.DANGER
    feed(engine, [("ball_007", 0.9)], t0=2)
    assert engine.state("m0").level == Level.DANGER and engine.state("m0").latched
    assert [e.data["to"] for e in engine.acknowledge()] == ["ALERT"]
    feed(engine, [("normal", 0.9)], t0=3)
    assert engine.state("m0").level == Level.NORMAL


def test_acknowledge_one_stream_leaves_the_others_latched():
    engine = DecisionEngine(BEARING, raw(set_windows=1, clear_windows=1, latching=True))
    for sid in ("a", "b"):
        engine.update(pred("inner_014", 0.9, 0.0, stream=sid))
        engine.update(pred("normal", 0.9, 1.0, stream=sid))
    assert [e.stream_id for e in engine.acknowledge("a")] == ["a"]
    assert engine.state("a").level == Level.NORMAL and engine.state("b").level == Level.ALERT
    assert engine.level_counts() == {"NORMAL": 1, "ALERT": 1, "DANGER": 0}


def test_unhealthy_sensor_is_never_confident_and_raises_nothing():
    engine = DecisionEngine(BEARING, raw(set_windows=1))
    steps = feed(engine, [("inner_021", 0.99)] * 5, healthy=False)
    assert all(lv == Level.NORMAL and not evs for _, lv, evs in steps)
    state = engine.state("m0")
    assert state.label == "?" and state.confidence == 0.0 and state.top3 == () and not state.healthy
    # Non-finite scores (e.g. from NaN input) are no evidence either.
    bad = pred("inner_021", 0.99, 10.0)
    bad.probs[:] = np.nan
    assert engine.update(bad) == [] and engine.state("m0").label == "?"


def test_alarm_held_while_sensor_is_unhealthy_and_history_restarts():
    engine = DecisionEngine(
        BEARING, DecisionConfig.for_labels(BEARING, set_windows=1, clear_windows=1, window_count=3)
    )
    feed(engine, [("outer_007", 0.95)] * 3)
    assert engine.state("m0").level == Level.ALERT
    feed(engine, [("normal", 0.95)] * 3, t0=3, healthy=False)
    assert engine.state("m0").level == Level.ALERT  # a dead sensor does not clear an alarm
    # After recovery the vote starts from the new windows only, not the pre-fault history.
    feed(engine, [("normal", 0.95)], t0=6)
    assert engine.state("m0").label == "normal" and engine.state("m0").level == Level.NORMAL


@pytest.mark.parametrize("mixed", [False, True])
def test_a_machine_the_model_refuses_every_window_of_is_still_alarmed_on_by_its_anomaly(mixed):
    # a machine unlike the training rig (another rig, a sensor at another place): the model says
    # "unknown" for every window, and only the learned baseline's anomaly speaks. It must raise the
    # alarm after set_windows windows and clear it after clear_windows, as it does where the model
    # names a label; each refused window restarted the debounce, so such a machine never alarmed
    cfg = raw(set_windows=3, clear_windows=4, anomaly_danger=None)
    engine = DecisionEngine(BEARING, cfg)
    levels = []
    for i, score in enumerate([5.0] * 5 + [0.2] * 6):
        p = pred("normal", 0.9, float(i))
        if not mixed or i % 2:  # mixed: the model names its label every other window
            p.model_label, p.label = p.label, "unknown"
        p.anomaly = score
        engine.update(p, healthy=True)
        levels.append(engine.state("m0").level)
    assert levels == [Level.NORMAL] * 2 + [Level.ALERT] * 6 + [Level.NORMAL] * 3, levels
    assert engine.state("m0").label == ("normal" if mixed else "unknown")


def test_the_envelope_raises_an_alarm_where_the_model_refuses_and_a_rest_clears_nothing():
    # the third opinion: a bearing's fault lines rising over what their type needs. The model
    # refuses every window (a machine unlike its training rig, or one its baseline holds at a
    # speed it never learned): the envelope's rise alone raises ALERT after set_windows windows
    # (DANGER at envelope_danger_db), holds it down to envelope_leave_db, and its fall on such
    # windows clears nothing (a machine that stopped still has its fault); windows the model
    # names clear it as before. Off (envelope_enter_db inf, or None), it raises nothing.
    cfg = raw(set_windows=3, clear_windows=2, anomaly_danger=None, envelope_danger_db=10.0)
    engine = DecisionEngine(BEARING, cfg)
    rises = [4.0] * 4 + [1.0] * 2 + [12.0] * 3 + [-5.0, None, float("nan")] * 2
    levels = []
    for i, rise in enumerate(rises):
        p = pred("normal", 0.9, float(i))
        p.model_label, p.label, p.envelope_db = p.label, "unknown", rise
        engine.update(p, healthy=True)
        levels.append(engine.state("m0").level)
    assert levels == [Level.NORMAL] * 2 + [Level.ALERT] * 4 + [Level.ALERT] * 2 + [Level.DANGER] * 7, levels
    for i in range(2):  # windows the model names normal, the envelope quiet: cleared after clear_windows
        p = pred("normal", 0.9, 20.0 + i)
        p.envelope_db = -1.0
        engine.update(p, healthy=True)
    assert engine.state("m0").level == Level.NORMAL
    off = DecisionEngine(BEARING, raw(envelope_enter_db=math.inf))  # TOML's off: inf (it has no null)
    for i in range(6):
        p = pred("normal", 0.9, float(i))
        p.envelope_db = 20.0
        off.update(p, healthy=True)
    assert off.state("m0").level == Level.NORMAL
    with pytest.raises(ConfigError, match="envelope_leave_db <= envelope_enter_db"):
        raw(envelope_enter_db=1.0, envelope_leave_db=2.0)


def test_majority_vote_ignores_a_single_outlier_window():
    engine = DecisionEngine(BEARING, DecisionConfig.for_labels(BEARING, window_count=5, set_windows=1))
    feed(engine, [("normal", 0.9)] * 4 + [("ball_021", 0.99)] + [("normal", 0.9)])
    state = engine.state("m0")
    assert state.label == "normal" and state.level == Level.NORMAL
    assert state.top3[0][0] == "normal" and state.top3[1][0] == "ball_021"
    assert state.confidence == pytest.approx((0.9 * 4 + 0.01 / 9) / 5, abs=1e-6)


def test_majority_vote_counts_only_the_last_windows_and_breaks_ties_by_score():
    # a window that left the history no longer votes: three "normal" windows, then two of a
    # fault, over the last three windows: the fault has two votes to one
    engine = DecisionEngine(BEARING, DecisionConfig.for_labels(BEARING, window_count=3, set_windows=1))
    feed(engine, [("normal", 0.9)] * 3 + [("inner_014", 0.6)] * 2)
    assert engine.state("m0").label == "inner_014"
    # two labels with one vote each: the one with the higher smoothed score, not the first label
    engine = DecisionEngine(BEARING, DecisionConfig.for_labels(BEARING, window_count=2, set_windows=1))
    feed(engine, [("normal", 0.55), ("inner_014", 0.95)])
    state = engine.state("m0")
    assert state.label == "inner_014"
    assert state.confidence == pytest.approx((0.45 / 9 + 0.95) / 2, abs=1e-6)


@pytest.mark.parametrize("smoothing", ["majority", "ema"])
def test_exact_ties_go_to_the_first_label_in_the_models_order(smoothing):
    # a model that cannot tell labels apart gives them equal scores: the label shown must not
    # depend on which came last, but be the first of them in the model's label order
    cfg = DecisionConfig.for_labels(BEARING, smoothing=smoothing, window_count=2, ema_alpha=0.5, set_windows=1)
    engine = DecisionEngine(BEARING, cfg)
    engine.update(Prediction("flat", 0, 0.0, np.full(len(BEARING), 0.1), "normal", 0.1, 0.3, 1.0))
    assert engine.state("flat").label == BEARING[0]
    # one vote each for two labels whose smoothed scores are then exactly equal
    first, second = BEARING.index("ball_007"), BEARING.index("outer_021")
    for t, (a, b) in enumerate([(first, second), (second, first)]):
        probs = np.zeros(len(BEARING))
        probs[a], probs[b] = 0.6, 0.4
        engine.update(Prediction("tie", t, float(t), probs, BEARING[a], 0.6, 0.3, 1.0))
    state = engine.state("tie")
    assert state.top3[0][1] == state.top3[1][1] == 0.5
    assert state.label == "ball_007"


def test_ema_smoothing_follows_a_lasting_change():
    engine = DecisionEngine(BEARING, DecisionConfig.for_labels(BEARING, smoothing="ema", ema_alpha=0.5))
    feed(engine, [("normal", 0.9)] * 3)
    feed(engine, [("inner_007", 0.9)], t0=3)
    assert engine.state("m0").label == "normal"  # one window is not enough...
    feed(engine, [("inner_007", 0.9)] * 2, t0=4)
    assert engine.state("m0").label == "inner_007"  # ...three are


def test_speech_labels_have_no_alarms_by_default():
    labels = [str(d) for d in range(10)] + ["_silence", "_noise"]
    config = DecisionConfig.for_labels(labels)
    assert not config.has_alarms
    engine = DecisionEngine(labels, config)
    for i in range(10):
        assert engine.update(pred("7", 0.99, float(i), labels=labels)) == []
    assert engine.state("m0").label == "7" and engine.state("m0").level == Level.NORMAL


def test_bearing_defaults_alert_on_every_fault_label():
    engine = DecisionEngine(BEARING)
    assert engine.level_of("normal") == Level.NORMAL
    assert all(engine.level_of(lab) == Level.ALERT for lab in BEARING[1:])


def test_config_file_loads_and_bad_keys_say_what_is_valid(tmp_path):
    config = DecisionConfig.from_toml(ROOT / "configs" / "alarms-bearing.toml")
    engine = DecisionEngine(BEARING, config)
    assert engine.level_of("outer_021") == Level.DANGER and engine.level_of("ball_007") == Level.ALERT
    bad = tmp_path / "bad.toml"
    bad.write_text("[decision]\nset_window = 3\n")
    with pytest.raises(ConfigError, match="unknown key.*set_window.*valid keys.*set_windows"):
        DecisionConfig.from_toml(bad)
    with pytest.raises(ConfigError, match="leave_confidence <= enter_confidence"):
        DecisionConfig(enter_confidence=0.3, leave_confidence=0.5)
    with pytest.raises(ConfigError, match=r"cannot read decision config \S+ \(No such file or directory\); check"):
        DecisionConfig.from_toml(tmp_path / "missing.toml")


def test_wrong_number_of_scores_is_a_clear_error():
    engine = DecisionEngine(BEARING)
    p = Prediction("m0", 0, 0.0, np.ones(4, dtype=np.float32) / 4, "normal", 0.25, 0.0, 1.0)
    with pytest.raises(ConfigError, match="4 scores but .* 10 labels"):
        engine.update(p)


def test_state_carries_levels_and_noise():
    # latency is the engine's (EngineStats), not a second record here
    engine = DecisionEngine(BEARING)
    for i in range(20):
        p = pred("normal", 0.9, float(i))
        p.level = float(i)
        engine.update(p)
    state = engine.state("m0")
    assert state.windows == 20 and engine.windows_total == 20
    assert state.levels[-1] == 19.0 and state.noise_index == pytest.approx(0.3)


def _one_by_one_and_batched(one: DecisionEngine, many: DecisionEngine, batch: list, healthy: list) -> list:
    """Feeds ``batch`` to ``one`` a prediction at a time and to ``many`` in one call; asserts the
    same (events, label, level) after each and returns them."""
    expected = []
    for p, ok in zip(batch, healthy):
        events = one.update(p, healthy=ok)
        st = one.state(p.stream_id)
        expected.append(([e.to_json() for e in events], st.label, st.level))
    got = [([e.to_json() for e in events], label, level) for events, label, level in many.update_many(batch, healthy)]
    assert got == expected
    return expected


def test_a_batch_of_predictions_decides_as_one_at_a_time():
    # the monitor feeds each result batch in one call: the alarms, labels and levels must be those
    # of feeding the same windows one by one, with a stream twice in a batch, sick sensors, NaN
    # scores and refused ("unknown") labels among them
    rng = np.random.default_rng(3)
    cfg = DecisionConfig.for_labels(BEARING, set_windows=2, clear_windows=2, latching=True)
    one, many = DecisionEngine(BEARING, cfg), DecisionEngine(BEARING, cfg)
    t, seen = 0.0, []
    for _ in range(60):
        batch, healthy = [], []
        for _ in range(int(rng.integers(1, 9))):
            t += 0.05
            label = BEARING[0] if rng.random() < 0.5 else str(rng.choice(BEARING))
            p = pred(label, float(rng.uniform(0.3, 0.99)), t, stream=f"m{rng.integers(3)}")
            if rng.random() < 0.05:
                p.probs = p.probs.copy()
                p.probs[1] = np.nan
            if rng.random() < 0.05:
                p.model_label, p.label = p.label, "unknown"
            batch.append(p)
            healthy.append(bool(rng.random() > 0.1))
        seen += _one_by_one_and_batched(one, many, batch, healthy)
    # the run went through alarms and back, and ended in the same state for every stream
    assert any(events for events, _, _ in seen) and {level for _, _, level in seen} >= {Level.NORMAL, Level.ALERT}
    assert {s: one.state(s) for s in one.streams} == {s: many.state(s) for s in many.streams}


def _same_state(a, b) -> bool:
    """Two streams' decision states equal, their arrays bit for bit."""
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "history":
            if len(x) != len(y) or any(not np.array_equal(p, q) or v != w for (p, v), (q, w) in zip(x, y)):
                return False
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def test_a_batch_of_distinct_streams_votes_as_one_at_a_time():
    # a batch of distinct streams is decided as rows of arrays at once: every result, and every
    # stream's state down to the last bit of its running sums, must be those of one window at a
    # time, through sick sensors, NaN scores, refused labels, new streams and the running sums'
    # periodic re-summing (every 1,024 windows of a stream) inside a big batch
    rng = np.random.default_rng(7)
    cfg = DecisionConfig.for_labels(BEARING, set_windows=2, clear_windows=2, latching=True)
    one, many = DecisionEngine(BEARING, cfg), DecisionEngine(BEARING, cfg)
    names = [f"m{k}" for k in range(60)]
    t, seen, batched = 0.0, [], 0
    for r in range(1100):
        size = int(rng.integers(16, 41)) if r % 7 else int(rng.integers(1, 16))
        chosen = ["m0", *rng.choice(names[1 : 20 + r // 20], size=min(size, 19 + r // 20) - 1, replace=False)]
        batch, healthy = [], []
        for sid in chosen:
            t += 0.001
            label = BEARING[0] if rng.random() < 0.4 else str(rng.choice(BEARING))
            p = pred(label, float(rng.uniform(0.3, 0.99)), t, stream=str(sid))
            # float64 scores of full precision: their sums round, so a step taken in another
            # order, or a re-sum left out, changes bits (float32 scores add up exactly)
            p.probs = p.probs + rng.uniform(0, 0.01, len(BEARING))
            sound = sid == "m0"  # every window of m0 is voted on: its 1,024th re-sums, in a big batch
            if not sound and rng.random() < 0.03:
                p.probs[1] = np.nan
            if not sound and rng.random() < 0.03:
                p.model_label, p.label = p.label, "unknown"
                p.anomaly = 2.0 if rng.random() < 0.5 else None
            batch.append(p)
            healthy.append(sound or bool(rng.random() > 0.05))
        batched += len(batch) >= 16
        seen += _one_by_one_and_batched(one, many, batch, healthy)
    assert batched > 800 and one.export_state("m0").windows > 1024  # m0's 1,024th window (round 1023) in a big batch
    assert any(events for events, _, _ in seen) and {level for _, _, level in seen} >= {Level.NORMAL, Level.ALERT}
    assert sorted(one.streams) == sorted(many.streams)
    for sid in one.streams:
        assert _same_state(one.export_state(sid), many.export_state(sid)), sid


def test_many_streams_and_a_forgotten_streams_successor_start_afresh():
    # every stream's state is a row of the engine's arrays, which grow as streams come; a stream
    # forgotten (a sensor removed) frees its row, and the stream that gets it next must not
    # inherit its latched alarm, its history or its levels
    cfg = DecisionConfig.for_labels(BEARING, latching=True, set_windows=2)
    engine = DecisionEngine(BEARING, cfg)

    def feed(streams: list[str], label: str, t: float, level: float) -> list:
        batch = [pred(label, 0.95, t, stream=sid) for sid in streams]
        for p in batch:
            p.level = level
        return engine.update_many(batch, [True] * len(batch))

    faulty = [f"old{i}" for i in range(100)]
    for t in range(4):
        feed(faulty, "inner_014", float(t), 7.0)
    assert engine.level_counts() == {"NORMAL": 0, "ALERT": 100, "DANGER": 0}
    more = [f"more{i}" for i in range(400)]  # the rows grow while the first streams' are in use
    feed(more, "normal", 5.0, 1.0)
    assert engine.level_counts() == {"NORMAL": 400, "ALERT": 100, "DANGER": 0}
    assert all(s.levels == (7.0,) * 4 and s.label == "inner_014" for s in engine.states(faulty).values())
    for sid in faulty[:50]:
        engine.forget(sid)
    fresh = [f"new{i}" for i in range(50)]
    events = feed(fresh, "normal", 10.0, 0.5)
    assert all(ev == [] and label == "normal" and level == Level.NORMAL for ev, label, level in events)
    assert all(s.windows == 1 and s.levels == (0.5,) and not s.latched and not s.unacknowledged
               and s.since == 10.0 for s in engine.states(fresh).values())
    assert engine.level_counts() == {"NORMAL": 450, "ALERT": 50, "DANGER": 0}
    assert sorted(engine.streams) == sorted(faulty[50:] + more + fresh)


@pytest.mark.parametrize("sick", [20, None])
def test_a_restored_stream_carries_on_exactly_as_it_would_have(sick):
    # a cluster host taking a stream over restores its saved state: the results from there on
    # must be those the first host would have given, down to the smoothed scores
    rng = np.random.default_rng(11)
    cfg = DecisionConfig.for_labels(BEARING, latching=True, set_windows=2, clear_windows=2)
    first, taker = DecisionEngine(BEARING, cfg), DecisionEngine(BEARING, cfg)

    def window(t: float) -> Prediction:  # faults and normal by turns of 12 windows, some outliers
        label = BEARING[2] if (int(t) // 12) % 2 else BEARING[0]
        label = str(rng.choice(BEARING)) if rng.random() < 0.2 else label
        p = pred(label, float(rng.uniform(0.4, 0.99)), t)
        p.probs = p.probs + rng.uniform(0, 0.01, len(BEARING))
        p.anomaly = float(rng.uniform(0.5, 1.5))
        return p

    # the history ring (5 windows) has wrapped round more than once; with a sick window at 20
    # the stream is saved with 2 windows of history, without one with a full ring
    for i in range(23):
        first.update(window(float(i)), healthy=i != sick)
    taker.update(pred("normal", 0.9, 0.0, stream="other"))
    taker.restore_state("m0", first.export_state("m0"))
    assert len(first.export_state("m0").history) == (2 if sick else 5)
    seen = []
    for i in range(23, 60):
        p = window(float(i))
        a, b = first.update(p), taker.update(p)
        assert [e.to_json() for e in a] == [e.to_json() for e in b]
        assert first.state("m0") == taker.state("m0")
        seen += a
    assert {e.data["to"] for e in seen} & {"ALERT", "DANGER"}  # the alarm moved meanwhile


def test_a_saved_state_with_numbers_the_engine_never_writes_is_refused():
    # a checkpoint comes from a directory every host shares: a damaged or planted one must not
    # become indexes of the state table (the compiled loop does not check them); the engine
    # says so and its other streams go on as they were
    engine = DecisionEngine(BEARING, DecisionConfig.for_labels(BEARING, set_windows=1))
    feed(engine, [("inner_014", 0.9)] * 2)
    good = engine.export_state("m0")
    bad = [dataclasses.replace(good, history=type(good.history)([(good.history[0][0], len(BEARING))])),
           dataclasses.replace(good, best=len(BEARING)), dataclasses.replace(good, best=-1),
           dataclasses.replace(good, cond=7), dataclasses.replace(good, shown=-1),
           dataclasses.replace(good, pending_count=-3), dataclasses.replace(good, best="x")]
    for state in bad:
        with pytest.raises(ConfigError, match="not one this engine writes"):
            engine.restore_state("planted", state)
    assert engine.streams == ["m0"] and engine.state("m0").level == Level.ALERT
    # numbers in range but arrays of the wrong size, or history entries that are not pairs, over
    # a stream the engine has: refused, and the stream stays as it was
    before = engine.state("m0")
    for state in (dataclasses.replace(good, psum=np.zeros(3)), dataclasses.replace(good, levels=[[1.0, 2.0]]),
                  dataclasses.replace(good, history=type(good.history)([(1.0,)]))):
        with pytest.raises(ConfigError, match="not one this engine writes"):
            engine.restore_state("m0", state)
        assert engine.state("m0") == before and engine.streams == ["m0"]
    engine.restore_state("copy", good)  # what it writes itself still comes back
    assert engine.state("copy").level == Level.ALERT and engine.state("copy").label == "inner_014"
    assert engine.update(pred("inner_014", 0.9, 5.0, stream="copy")) == [] and engine.state("copy").windows == 3


def test_running_sums_are_summed_afresh_every_1024_windows():
    # the majority vote keeps a running sum of the last windows' scores (minus the oldest, plus
    # the newest): rounding accumulates, so every 1,024th window it is summed from the history
    rng = np.random.default_rng(5)
    engine = DecisionEngine(BEARING, DecisionConfig.for_labels(BEARING, window_count=7))
    for i in range(1024):
        p = pred("normal", 0.6, float(i))
        p.probs = rng.dirichlet(np.ones(len(BEARING)))  # float64 scores: their sums round
        engine.update(p)
        if i == 1000:
            drifted = engine.export_state("m0")
            assert not np.array_equal(drifted.psum, np.sum([h[0] for h in drifted.history], axis=0))
    state = engine.export_state("m0")
    assert state.windows == 1024
    assert np.array_equal(state.psum, np.sum([h[0] for h in state.history], axis=0))


def _reference_state(ref: ReferenceDecisions, sid: str) -> dict:
    """``DecisionEngine.state``'s fields as the reference has them."""
    st = ref.streams[sid]
    top3: tuple = ()
    if st.probs is not None:
        top3 = tuple((BEARING[i], float(st.probs[i])) for i in np.argsort(-st.probs, kind="stable")[:3])
    held = max(0.0, st.last_time - st.since) if st.since is not None and st.last_time is not None else 0.0
    return {"stream_id": sid, "label": st.label, "confidence": st.confidence, "level": st.shown, "since": st.since,
            "held_s": held, "top3": top3, "noise_index": st.noise, "latched": st.shown > st.cond,
            "unacknowledged": st.peak > Level.NORMAL, "healthy": st.healthy, "windows": st.windows,
            "last_time": st.last_time, "levels": tuple(st.levels), "anomaly": st.anomaly}


def _as_engine_batch(rows: list[Prediction]) -> list[Prediction]:
    """``rows`` remade as the engine makes a batch (``predictions_from``: a ``Predictions`` with
    the batch's columns), with what later stages set on a row (a refused label, an anomaly score)
    set afterwards, as they do it."""
    b = len(rows)
    windows = [Window(p.stream_id, p.index, p.t_last, np.zeros(4, np.float32), 0.0, p.level) for p in rows]
    batch = predictions_from(windows, np.array([p.probs for p in rows]), np.array([p.noise_index for p in rows]),
                             BEARING, levels=np.array([p.level for p in rows]),
                             latency_ms=np.ones(b), t_batched=0.0, t_done=0.0)
    for p, q in zip(rows, batch):
        assert (q.stream_id, q.t_last, q.level) == (p.stream_id, p.t_last, p.level)
        q.label, q.model_label, q.anomaly, q.envelope_db = p.label, p.model_label, p.anomaly, p.envelope_db
    return batch


@pytest.mark.parametrize("seed, settings", list(enumerate([
    {}, {"latching": True, "set_windows": 2, "clear_windows": 2}, {"smoothing": "ema"}, {"window_count": 1},
    {"danger_confidence": 0.7, "latching": True}, {"window_count": 3, "danger_after_s": None, "anomaly_danger": None},
    {"envelope_danger_db": 8.0, "envelope_leave_db": 1.0}, {"envelope_enter_db": None},
])))
def test_batches_decide_as_the_plain_reference_does_one_window_at_a_time(seed, settings):
    # the engine decides a batch in one compiled loop or in numpy steps over rows of arrays (the
    # ``path`` fixture runs each); tests/decision_reference.py has the rules one window at a time
    # in plain Python. Every result and every stream's state
    # must match bit for bit: batches of up to 60 with a stream several times in one, sick
    # sensors, NaN scores, refused labels, anomaly scores (inf among them), envelope rises (NaN,
    # inf among them), acknowledgements, forgotten streams, float32 and float64 scores
    rng = np.random.default_rng(seed)
    cfg = DecisionConfig.for_labels(BEARING, **settings)
    engine = DecisionEngine(BEARING, cfg)
    ref = ReferenceDecisions(BEARING, cfg, engine.level_of)
    names = [f"m{i}" for i in range(int(rng.integers(3, 30)))]
    home = {sid: int(rng.integers(len(BEARING))) for sid in names}
    t, events, levels = 0.0, 0, set()
    for r in range(300):
        batch, healthy = [], []
        for _ in range(int(rng.integers(1, 60))):
            t += float(rng.uniform(0, 0.3))
            sid = str(rng.choice(names))
            cls = int(rng.integers(len(BEARING))) if rng.random() < 0.3 else home[sid]
            probs = rng.dirichlet(np.ones(len(BEARING)) * 0.3) * 0.4
            probs[cls] += float(rng.uniform(0.2, 0.6))
            probs = probs.astype(np.float64 if rng.random() < 0.5 else np.float32)
            if rng.random() < 0.03:
                probs[2] = np.nan
            label = BEARING[int(np.nanargmax(probs))]
            noise = float(rng.random()) if rng.random() > 0.05 else float("nan")
            p = Prediction(sid, r, t, probs, label, float(np.nanmax(probs)), noise, 1.0, level=float(rng.random()))
            if rng.random() < 0.05:
                p.model_label, p.label = p.label, "unknown"
            if rng.random() < 0.3:
                p.anomaly = float(rng.choice([0.5, 0.9, 1.2, 5.0, np.nan, np.inf]))
            if rng.random() < 0.3:
                p.envelope_db = float(rng.choice([-2.0, 0.5, 2.0, 3.0, 9.0, np.nan, np.inf]))
            batch.append(p)
            healthy.append(bool(rng.random() > 0.05))
        if r % 2:  # as the engine hands a batch on: its columns are read, not each row's fields
            batch = _as_engine_batch(batch)
            assert batch_columns(batch) is batch
        got = [([e.to_json() for e in ev], label, level) for ev, label, level in engine.update_many(batch, healthy)]
        want = []
        for p, ok in zip(batch, healthy):
            ev = ref.update(p, ok)
            want.append((ev, ref.streams[p.stream_id].label, ref.streams[p.stream_id].shown))
        assert got == want, r
        events += sum(len(ev) for ev, _, _ in got)
        levels |= {level for _, _, level in got}
        if rng.random() < 0.05:
            sid = str(rng.choice(names)) if rng.random() < 0.7 else None
            now = t if rng.random() < 0.5 else None
            assert [e.to_json() for e in engine.acknowledge(sid, now=now)] == ref.acknowledge(sid, now)
        if rng.random() < 0.02:
            sid = str(rng.choice(names))
            engine.forget(sid)
            ref.streams.pop(sid, None)
        if r % 20 == 0 or r == 299:
            assert sorted(engine.streams) == sorted(ref.streams)
            for sid, state in engine.states().items():
                assert dataclasses.asdict(state) == _reference_state(ref, sid), (r, sid)
    assert events > 10 and Level.ALERT in levels


def test_without_numba_or_with_a_kernel_it_refuses_the_decisions_are_numpy_steps(monkeypatch, path):
    if path != "numpy":
        pytest.skip("about building the kernel: once is enough")

    def refuse(fn, **options):
        raise RuntimeError("LLVM says no")

    for why, name, value in [("numba is not installed", "numba", None), ("LLVM says no", "compile_kernel", refuse)]:
        with monkeypatch.context() as mp:
            mp.setattr(jit, name, value)
            mp.setattr(decision, "_kernels", jit.Kernels(decision._build_kernel))  # not tried yet
            assert not decision.warm() and why in decision.why_not()
            with pytest.raises(RuntimeError, match=why):
                DecisionEngine(BEARING, compiled=True)
            engine = DecisionEngine(BEARING, raw(set_windows=2))
            assert [level for _, level, _ in feed(engine, [("inner_014", 0.9)] * 3)] == [
                Level.NORMAL, Level.ALERT, Level.ALERT]


def test_the_kernel_takes_the_state_table_in_its_column_order(path):
    # the compiled loop gets the table's columns by position: its parameters between the
    # settings and the outputs must be _COLUMNS, in order (a "_c" suffix where the loop keeps a
    # local of the same name)
    if path != "numpy":  # the path every machine runs
        pytest.skip("about the kernel's signature: once is enough")
    names = list(inspect.signature(decision_jit._decide_py).parameters)
    table = names[names.index("level_of") + 1 : names.index("labels_out")]
    assert [n.removesuffix("_c") for n in table] == [name for name, _, _, _ in decision._COLUMNS]


def test_the_largest_settings_accepted_are_settings_the_engine_runs_with():
    """window_count 256 and set/clear delays of 1,000,000 windows (the bounds of DecisionConfig)
    build an engine that decides; one past each is a ConfigError that names the bound."""
    cfg = DecisionConfig.for_labels(BEARING, window_count=256, set_windows=1_000_000, clear_windows=1_000_000)
    engine = DecisionEngine(BEARING, cfg)
    batch = [pred("ball_014", 0.9, float(t), stream=f"m{t % 3}") for t in range(300)]
    results = engine.update_many(batch, [True] * len(batch))
    assert [label for _, label, _ in results][-3:] == ["ball_014"] * 3
    assert all(level == Level.NORMAL for _, _, level in results)  # a million windows before an alert
    for key, value, says in (("window_count", 257, "from 1 to 256"), ("set_windows", 1_000_001, "1,000,000"),
                             ("clear_windows", 10**30, "1,000,000")):
        with pytest.raises(ConfigError, match=says):
            DecisionConfig.for_labels(BEARING, **{key: value})
