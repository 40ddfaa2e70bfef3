"""The synchronous session table on its own: a state machine against a plain model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memwarden._session_table import _Entry, _SessionTable


class TableMachine(RuleBasedStateMachine):
    """Adds, touches, resizes, leases, removals and sweeps; totals and LRU order must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.table = _SessionTable()
        self.now = 0.0
        self.counter = 0
        self.sizes: dict[str, int] = {}
        self.leases: dict[str, int] = {}
        self.pins: dict[str, int] = {}  # in-flight updates
        self.rejected = 0
        self.expired = 0
        self.ended = 0
        self.peak_bytes = 0

    def _pick(self, data: st.DataObject) -> _Entry:
        sid = data.draw(st.sampled_from(sorted(self.sizes)))
        entry = self.table.get(sid)
        assert entry is not None
        return entry

    @rule(nbytes=st.integers(0, 1000))
    def add(self, nbytes: int) -> None:
        self.counter += 1
        sid = f"s{self.counter}"
        self.table.add(_Entry(sid, {}, nbytes, self.now))
        self.sizes[sid] = nbytes
        self.leases[sid] = 0
        self.pins[sid] = 0
        self.peak_bytes = max(self.peak_bytes, sum(self.sizes.values()))

    @rule(seconds=st.sampled_from([0.0, 1.0, 5.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.sizes)
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        self.table.touch(self._pick(data), self.now)

    @precondition(lambda self: self.sizes)
    @rule(data=st.data(), nbytes=st.integers(0, 1000))
    def resize(self, data: st.DataObject, nbytes: int) -> None:
        entry = self._pick(data)
        self.table.resize(entry, {"n": nbytes}, nbytes)
        self.sizes[entry.session_id] = nbytes
        self.peak_bytes = max(self.peak_bytes, sum(self.sizes.values()))

    @precondition(lambda self: self.sizes)
    @rule(data=st.data())
    def lease(self, data: st.DataObject) -> None:
        entry = self._pick(data)
        self.table.lease(entry)
        self.leases[entry.session_id] += 1

    @precondition(lambda self: any(self.leases.values()))
    @rule(data=st.data())
    def unlease(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(s for s, n in self.leases.items() if n)))
        entry = self.table.get(sid)
        assert entry is not None
        self.table.unlease(entry)
        self.leases[sid] -= 1

    @precondition(lambda self: self.sizes)
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        entry = self._pick(data)
        self.table.pin(entry)
        self.pins[entry.session_id] += 1

    @precondition(lambda self: any(self.pins.values()))
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(s for s, n in self.pins.items() if n)))
        entry = self.table.get(sid)
        assert entry is not None
        self.table.unpin(entry, self.now)
        self.pins[sid] -= 1
        assert entry.last_access == self.now  # idle time starts again

    @rule()
    def reject(self) -> None:
        self.table.reject()
        self.rejected += 1

    @precondition(lambda self: self.sizes)
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        entry = self._pick(data)
        self.table.remove(entry, expired=False)
        assert entry.ended
        del self.sizes[entry.session_id]
        del self.leases[entry.session_id]
        del self.pins[entry.session_id]
        self.ended += 1

    @rule(min_idle=st.sampled_from([0.0, 1.0, 10.0]), max_count=st.none() | st.integers(0, 3))
    def sweep(self, min_idle: float, max_count: int | None) -> None:
        found = self.table.idle_entries(self.now, min_idle, max_count)
        if max_count is not None:
            assert len(found) <= max_count
        eligible = [e for e in self.table if not e.pinned and self.now - e.last_access >= min_idle]
        # Least recently used first, and exactly the oldest eligible ones.
        assert [e.session_id for e in found] == [e.session_id for e in eligible][: len(found)]
        if max_count is None:
            assert len(found) == len(eligible)
        for entry in found:
            assert self.leases[entry.session_id] == 0, "a leased session was offered for expiry"
            assert self.pins[entry.session_id] == 0, "a session being updated was offered"
            self.table.remove(entry, expired=True)
            del self.sizes[entry.session_id]
            del self.leases[entry.session_id]
            del self.pins[entry.session_id]
            self.expired += 1

    @invariant()
    def totals(self) -> None:
        table = self.table
        assert len(table) == len(self.sizes)
        assert table.total_bytes == sum(self.sizes.values())
        assert table.leased == sum(1 for n in self.leases.values() if n)
        assert table.expired == self.expired and table.ended == self.ended
        assert table.created == self.counter
        assert table.rejected_updates == self.rejected
        assert table.peak_bytes == self.peak_bytes
        assert table.peak_sessions >= len(table)

    @invariant()
    def lru_order(self) -> None:
        times = [entry.last_access for entry in self.table]
        assert times == sorted(times)


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


class KeyTableMachine(RuleBasedStateMachine):
    """User keys against a plain LRU model: bounded, forgotten with their session."""

    def __init__(self) -> None:
        super().__init__()
        self.table = _SessionTable(max_keys=3)
        self.counter = 0
        self.model: dict[str, str] = {}  # key -> session id, least recently used first
        self.live: set[str] = set()
        self.evicted = 0
        self.claims: dict[str, object] = {}

    @rule(key=KEYS)
    def get_or_create(self, key: str) -> None:
        entry = self.table.find_key(key)
        if key in self.model:
            assert entry is not None and entry.session_id == self.model.pop(key)
            self.model[key] = entry.session_id
            return
        assert entry is None
        self.counter += 1
        entry = _Entry(f"s{self.counter}", {}, 0, 0.0)
        self.table.add(entry)
        self.live.add(entry.session_id)
        forgotten = self.table.bind_key(key, entry)
        if len(self.model) == 3:
            oldest = next(iter(self.model))
            assert forgotten is not None and forgotten.session_id == self.model.pop(oldest)
            assert forgotten.key is None and not forgotten.ended  # the session lives on
            self.evicted += 1
        else:
            assert forgotten is None
        self.model[key] = entry.session_id

    @rule()
    def create_unkeyed(self) -> None:
        self.counter += 1
        entry = _Entry(f"s{self.counter}", {}, 0, 0.0)
        self.table.add(entry)
        self.live.add(entry.session_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), expired=st.booleans())
    def remove(self, data: st.DataObject, expired: bool) -> None:
        sid = data.draw(st.sampled_from(sorted(self.live)))
        entry = self.table.get(sid)
        assert entry is not None
        self.table.remove(entry, expired=expired)
        self.live.discard(sid)
        self.model = {k: s for k, s in self.model.items() if s != sid}

    @rule(key=KEYS)
    def claim(self, key: str) -> None:
        token = object()
        current = self.table.claim_key(key, token)
        if key in self.claims:
            assert current is self.claims[key]
        else:
            assert current is None
            self.claims[key] = token
        assert self.table.creating(key)

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.claims)))
        self.table.settle_key(key, object())  # a stranger's token settles nothing
        assert self.table.creating(key)
        self.table.settle_key(key, self.claims.pop(key))
        assert not self.table.creating(key)

    @invariant()
    def keys_match_the_model(self) -> None:
        table = self.table
        assert [(k, e.session_id) for k, e in table._keys.items()] == list(self.model.items())
        assert table.keys == len(self.model) <= table.peak_keys <= 3
        assert table.keys_evicted == self.evicted
        for entry in table:
            assert (entry.key is not None) == (entry.session_id in self.model.values())
            if entry.key is not None:
                assert self.model[entry.key] == entry.session_id


TestKeyTableMachine = KeyTableMachine.TestCase
TestKeyTableMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
