//! Linearizability checker for a single-key register with compare-and-set.
//!
//! A history is a set of client operations (read, write/delete, compare-and-set),
//! each with the time it was called and the time it returned. The history is
//! linearizable if every operation can be assigned a single instant between its
//! call and its return such that, executed one by one in that order on a
//! sequential register that starts at the initial value, every operation
//! produces exactly the outcome the client observed.
//!
//! Operations whose outcome is [`Outcome::Unknown`] (timeouts, crashes) may have
//! taken effect at any instant after their call, or never: they are treated as
//! returning at +infinity, with any result accepted, and may be left out.
//!
//! The search is the Wing–Gong algorithm as refined by Lowe ("Testing for
//! linearizability", 2017): call and return events are kept in a doubly linked
//! list sorted by time, and an operation is linearized "just in time" by lifting
//! its call and return out of the list; reaching a return event whose operation
//! has not been linearized forces backtracking. Each configuration entered
//! (bitset of linearized operations, register value) is memoized, so it is
//! explored at most once. The search is iterative (explicit stack) and bounded
//! by a step budget. Sound reductions keep it small:
//!
//! - an enabled operation that can never change the register (a read, a
//!   failed compare-and-set) is linearized at once, without alternatives;
//! - values that are never read nor expected are merged into one;
//! - an operation with an unknown outcome is only linearized where it changes
//!   the register and is not immediately overwritten, identical ones are used
//!   in call order, and a configuration is pruned when one with the same
//!   known-outcome operations and value, but fewer unknown-outcome operations
//!   used, already failed.
//!
//! When the history is not linearizable, the operation reported is the one
//! whose return ends the shortest non-linearizable prefix of the history.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::{self, Write as _};

/// Step budget used by [`check`]. A step examines one event of the lists;
/// histories of a few thousand operations from 16 clients typically need tens
/// to hundreds of steps per operation. The limit bounds pathological cases to
/// a couple of seconds (optimized build) and a few hundred megabytes.
pub const DEFAULT_MAX_STEPS: u64 = 50_000_000;

/// An operation a client invoked on the register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the current value.
    Read,
    /// Overwrite the value; `None` deletes the key.
    Write(Option<Vec<u8>>),
    /// Set the value to `new` if it currently equals `expect` (`None` meaning
    /// absent); otherwise leave it unchanged.
    Cas {
        /// Value the register must hold for the swap to happen.
        expect: Option<Vec<u8>>,
        /// Value stored when the swap happens.
        new: Option<Vec<u8>>,
    },
}

/// What the client observed when the operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A [`Op::Read`] returned this value (`None`: the key was absent).
    Read(Option<Vec<u8>>),
    /// A [`Op::Write`] was acknowledged.
    Write,
    /// A [`Op::Cas`] returned; `true` if the swap happened.
    Cas(bool),
    /// The client never got an answer (timeout, crash): the operation may or
    /// may not have taken effect, at any time after its call.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Client that issued the operation (informational, used in messages).
    pub client: u64,
    /// Time the operation was invoked (monotonic nanoseconds or any totally
    /// ordered clock shared by all clients).
    pub call: u64,
    /// Time the answer was received; `None` for [`Outcome::Unknown`], treated
    /// as returning at +infinity. An unknown outcome is always treated as
    /// returning at +infinity, whatever this field says; a known outcome with
    /// `None` here must still be linearized somewhere after its call.
    pub ret: Option<u64>,
    /// The operation invoked.
    pub op: Op,
    /// What the client observed.
    pub outcome: Outcome,
}

/// Why a history was rejected: not linearizable, malformed, or the search
/// budget ran out (the message then contains "search budget exhausted").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Human readable explanation. For a non-linearizable history it names the
    /// operation (index into the history, client, call and return times) whose
    /// return ends the shortest prefix of the history that is not linearizable.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Violation {}

/// Checks that `history` is linearizable for a register that initially holds
/// `initial` (`None`: absent), with a step budget of [`DEFAULT_MAX_STEPS`].
pub fn check(initial: Option<Vec<u8>>, history: &[Operation]) -> Result<(), Violation> {
    check_with_limit(initial, history, DEFAULT_MAX_STEPS)
}

/// Like [`check`], but gives up after `max_steps` search steps (see
/// [`DEFAULT_MAX_STEPS`]) with a [`Violation`] whose message starts with
/// "search budget exhausted".
pub fn check_with_limit(
    initial: Option<Vec<u8>>,
    history: &[Operation],
    max_steps: u64,
) -> Result<(), Violation> {
    let mut values = Interner::default();
    let initial = values.intern(initial.as_deref());
    let (ops, initial) = compile(history, &mut values, initial)?;
    let mut search = Search::new(&ops);
    let verdict = search.run(initial, max_steps);
    let blocked = |search: &Search| {
        let op = &ops[search.node_op[search.frontier]];
        (op.index, describe(&history[op.index]))
    };
    match verdict {
        Verdict::Linearizable => Ok(()),
        Verdict::Violated => {
            let (index, description) = blocked(&search);
            let states: Vec<String> = search
                .frontier_states
                .iter()
                .map(|&state| values.show(state))
                .collect();
            Err(Violation {
                message: format!(
                    "history is not linearizable: operation #{index} ({description}) cannot \
                     be linearized; the history up to its return has no valid linearization, \
                     while the history before that point has one (at most {} of {} \
                     operations could be linearized; register values reachable when it had \
                     to take effect: {})",
                    search.deepest,
                    ops.len(),
                    states.join(", "),
                ),
            })
        }
        Verdict::Exhausted => {
            let mut message = format!(
                "search budget exhausted after {max_steps} steps without deciding whether the \
                 history of {} operations is linearizable (deepest point: {} operations \
                 linearized",
                ops.len(),
                search.deepest,
            );
            if search.frontier != HEAD {
                let (index, description) = blocked(&search);
                let _ = write!(message, ", blocked at operation #{index} ({description})");
            }
            message.push(')');
            Err(Violation { message })
        }
    }
}

/// Index of an interned register value (`None` or some bytes).
type Value = usize;

/// Maps each distinct value in the history to a small integer, so that the
/// register state is a `usize`.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<Option<&'a [u8]>, Value>,
    values: Vec<Option<&'a [u8]>>,
}

impl<'a> Interner<'a> {
    fn intern(&mut self, value: Option<&'a [u8]>) -> Value {
        *self.ids.entry(value).or_insert_with(|| {
            self.values.push(value);
            self.values.len() - 1
        })
    }

    /// Formats a value for messages; ids past the table stand for the merged
    /// values that are never read (see [`compile`]).
    fn show(&self, value: Value) -> String {
        match self.values.get(value) {
            Some(&value) => show(value),
            None => "<a value never read back>".to_owned(),
        }
    }
}

/// Sequential specification of one operation together with its outcome.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Read(Value),
    Write(Value),
    Cas {
        expect: Value,
        new: Value,
        /// `None` when the outcome is unknown.
        succeeded: Option<bool>,
    },
}

impl Step {
    /// Whether the step leaves the register unchanged in every state where
    /// its outcome is possible: such a step can be moved to any earlier point
    /// where it is enabled without affecting the other operations.
    fn is_pure(self) -> bool {
        match self {
            Step::Read(_) => true,
            Step::Write(_) => false,
            Step::Cas {
                expect,
                new,
                succeeded,
            } => succeeded == Some(false) || (succeeded == Some(true) && expect == new),
        }
    }

    /// The register value after applying the step to `state`, or `None` if
    /// the observed outcome is impossible in that state.
    fn apply(self, state: Value) -> Option<Value> {
        match self {
            Step::Read(value) => (state == value).then_some(state),
            Step::Write(value) => Some(value),
            Step::Cas {
                expect,
                new,
                succeeded,
            } => match (state == expect, succeeded) {
                (true, Some(false)) | (false, Some(true)) => None,
                (true, _) => Some(new),
                (false, _) => Some(state),
            },
        }
    }
}

/// An operation prepared for the search.
struct Checked {
    /// Index in the caller's history.
    index: usize,
    call: u64,
    /// `None`: +infinity.
    ret: Option<u64>,
    step: Step,
    unknown: bool,
    /// Position in the bitset of linearized operations: known outcomes and
    /// unknown outcomes are numbered separately, in call order.
    bit: usize,
}

/// Validates the history, drops reads with unknown outcome and returns the
/// remaining operations sorted by call time, along with the initial value.
///
/// Values that no operation compares the register with (never read, never
/// expected by a compare-and-set) are indistinguishable, so they are merged
/// into one: configurations that differ only in such values, and
/// unknown-outcome writes of them, become identical.
fn compile<'a>(
    history: &'a [Operation],
    values: &mut Interner<'a>,
    initial: Value,
) -> Result<(Vec<Checked>, Value), Violation> {
    let mut ops = Vec::with_capacity(history.len());
    for (index, operation) in history.iter().enumerate() {
        let malformed = |reason: &str| Violation {
            message: format!(
                "malformed history: operation #{index} ({}): {reason}",
                describe(operation)
            ),
        };
        if operation.ret.is_some_and(|ret| ret < operation.call) {
            return Err(malformed("returns before it is called"));
        }
        let step = match (&operation.op, &operation.outcome) {
            (Op::Read, Outcome::Unknown) => continue,
            (Op::Read, Outcome::Read(value)) => Step::Read(values.intern(value.as_deref())),
            (Op::Write(value), Outcome::Write | Outcome::Unknown) => {
                Step::Write(values.intern(value.as_deref()))
            }
            (Op::Cas { expect, new }, Outcome::Cas(_) | Outcome::Unknown) => Step::Cas {
                expect: values.intern(expect.as_deref()),
                new: values.intern(new.as_deref()),
                succeeded: match operation.outcome {
                    Outcome::Cas(succeeded) => Some(succeeded),
                    _ => None,
                },
            },
            _ => return Err(malformed("outcome does not match the operation")),
        };
        let unknown = operation.outcome == Outcome::Unknown;
        ops.push(Checked {
            index,
            call: operation.call,
            ret: if unknown { None } else { operation.ret },
            step,
            unknown,
            bit: 0,
        });
    }
    let mut observed = vec![false; values.values.len()];
    for op in &ops {
        if let Step::Read(value) | Step::Cas { expect: value, .. } = op.step {
            observed[value] = true;
        }
    }
    let unobserved = values.values.len();
    let merge = |value: Value| if observed[value] { value } else { unobserved };
    ops.sort_by_key(|op| (op.call, op.index));
    let mut counts = [0, 0];
    for op in &mut ops {
        match &mut op.step {
            Step::Read(_) => {}
            Step::Write(value) | Step::Cas { new: value, .. } => *value = merge(*value),
        }
        let count = &mut counts[usize::from(op.unknown)];
        op.bit = *count;
        *count += 1;
    }
    Ok((ops, merge(initial)))
}

/// Sentinel node at the start of the event list.
const HEAD: usize = 0;

/// Which candidates a scan of the event list considers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Known-outcome operations that never change the register (see
    /// [`Step::is_pure`]). If one is enabled, some linearization from here
    /// (if any exists) starts with it, so it is the only choice tried.
    Pure,
    /// Other known-outcome operations.
    Impure,
    /// Unknown-outcome operations, only where they change the register:
    /// leaving such an operation out is always at least as good as
    /// linearizing it without effect. Candidates are the operations called
    /// before the first pending return.
    Unknown,
}

/// A linearized operation on the search stack.
struct Frame {
    /// Call node of the operation.
    node: usize,
    /// Pass in which it was chosen (to resume the scan when backtracking).
    pass: Pass,
    /// Register value before it.
    prev_state: Value,
    /// `low` and `high` of [`Linearized`] before it.
    prev_bounds: (usize, usize),
    /// Index of the configuration it led to in its memoization bucket.
    visit: usize,
}

/// A configuration entered by the search, within its memoization bucket
/// (configurations with the same linearized known-outcome operations and the
/// same register value).
struct Visit {
    /// Bitset of the linearized unknown-outcome operations.
    used: Box<[u64]>,
    /// Fully explored without finding a linearization (otherwise still on the
    /// search stack).
    failed: bool,
}

impl Visit {
    fn new(used: &[u64]) -> Self {
        Visit {
            used: used.into(),
            failed: false,
        }
    }

    /// Whether entering a configuration of the same bucket that used the
    /// unknown-outcome operations `used` is pointless: it was already entered,
    /// or it is dominated by this failed one (having fewer unknown-outcome
    /// operations linearized only leaves more options).
    fn covers(&self, used: &[u64]) -> bool {
        let subset = self
            .used
            .iter()
            .zip(used)
            .all(|(&mine, &theirs)| mine & !theirs == 0);
        subset && (self.failed || *self.used == *used)
    }
}

/// The set of linearized operations, as two bitsets (known and unknown
/// outcomes are numbered separately, in call order).
struct Linearized {
    known: Vec<u64>,
    /// Number of known-outcome operations.
    known_len: usize,
    /// Every known-outcome operation below `low` is linearized, `low` is not.
    low: usize,
    /// No known-outcome operation at or above `high` is linearized.
    high: usize,
    unknown: Vec<u64>,
}

impl Linearized {
    fn new(known_len: usize, unknown_len: usize) -> Self {
        Linearized {
            known: vec![0; known_len.div_ceil(64)],
            known_len,
            low: 0,
            high: 0,
            unknown: vec![0; unknown_len.div_ceil(64)],
        }
    }

    fn has(bits: &[u64], bit: usize) -> bool {
        bits[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Adds `op`, returning the previous `(low, high)` for [`Linearized::remove`].
    fn insert(&mut self, op: &Checked) -> (usize, usize) {
        let bounds = (self.low, self.high);
        let bits = if op.unknown {
            &mut self.unknown
        } else {
            &mut self.known
        };
        bits[op.bit / 64] |= 1 << (op.bit % 64);
        if !op.unknown {
            self.high = self.high.max(op.bit + 1);
            while self.low < self.known_len && Self::has(&self.known, self.low) {
                self.low += 1;
            }
        }
        bounds
    }

    /// Undoes the matching [`Linearized::insert`].
    fn remove(&mut self, op: &Checked, (low, high): (usize, usize)) {
        let bits = if op.unknown {
            &mut self.unknown
        } else {
            &mut self.known
        };
        bits[op.bit / 64] &= !(1 << (op.bit % 64));
        self.low = low;
        self.high = high;
    }

    /// Writes the memoization bucket key of the configuration with register
    /// word `state` into `key`: the known-outcome bitset, compressed to the
    /// words between `low` and `high` (all bits below are set, all bits above
    /// are clear), followed by `state`.
    fn bucket(&self, state: u64, key: &mut Vec<u64>) {
        let first = self.low / 64;
        let last = self.high.div_ceil(64).max(first);
        key.clear();
        key.push(first as u64);
        key.extend_from_slice(&self.known[first..last]);
        key.push(state);
    }
}

enum Verdict {
    Linearizable,
    Violated,
    Exhausted,
}

/// Event lists and search diagnostics.
struct Search<'c> {
    ops: &'c [Checked],
    /// Operation of each node. Nodes `1..=e` are the events in time order
    /// (calls before returns at equal times, so such operations overlap):
    /// calls and returns of known-outcome operations, linked in the main list
    /// that starts at [`HEAD`] and ends at `e + 1`, and calls of
    /// unknown-outcome operations (which return at +infinity), kept out of the
    /// main list so that its scans do not wade through them.
    ///
    /// Unknown-outcome operations with the same step are interchangeable, so
    /// they are used in call order: only the first unlinearized one of each
    /// such class is linked, in the unknown list from `unknown_head` (`e + 2`)
    /// to `e + 3`, and when it is linearized the next one takes its place.
    node_op: Vec<usize>,
    is_call: Vec<bool>,
    /// For the call of a known-outcome operation, the node of its return.
    partner: Vec<Option<usize>>,
    /// For the call of an unknown-outcome operation, the call of the next
    /// operation of its class.
    successor: Vec<Option<usize>>,
    prev: Vec<usize>,
    next: Vec<usize>,
    unknown_head: usize,
    /// Latest first-pending return node over all failed configurations.
    frontier: usize,
    /// Distinct register values of failed configurations at `frontier`.
    frontier_states: Vec<Value>,
    /// Most operations linearized at once.
    deepest: usize,
}

/// How many register values a violation message lists at most.
const MAX_REPORTED_STATES: usize = 8;

impl<'c> Search<'c> {
    fn new(ops: &'c [Checked]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (id, op) in ops.iter().enumerate() {
            events.push((op.call, false, id));
            if !op.unknown {
                events.push((op.ret.unwrap_or(u64::MAX), true, id));
            }
        }
        events.sort_unstable();
        let main_tail = events.len() + 1;
        let unknown_head = main_tail + 1;
        let nodes = unknown_head + 2;
        let mut search = Search {
            ops,
            node_op: vec![usize::MAX; nodes],
            is_call: vec![false; nodes],
            partner: vec![None; nodes],
            successor: vec![None; nodes],
            prev: vec![HEAD; nodes],
            next: vec![HEAD; nodes],
            unknown_head,
            frontier: HEAD,
            frontier_states: Vec::new(),
            deepest: 0,
        };
        // Last node of the main list and of the unknown list.
        let mut last = [HEAD, unknown_head];
        let mut call_node = vec![HEAD; ops.len()];
        // Last call of each class of unknown-outcome operations.
        let mut classes = HashMap::new();
        for (position, &(_, is_return, id)) in events.iter().enumerate() {
            let node = position + 1;
            search.node_op[node] = id;
            if is_return {
                search.partner[call_node[id]] = Some(node);
            } else {
                search.is_call[node] = true;
                call_node[id] = node;
            }
            let op = &ops[id];
            if op.unknown {
                if let Some(previous) = classes.insert(op.step, node) {
                    search.successor[previous] = Some(node);
                    continue;
                }
            }
            let list = usize::from(op.unknown);
            search.next[last[list]] = node;
            search.prev[node] = last[list];
            last[list] = node;
        }
        for (list, tail) in [main_tail, unknown_head + 1].into_iter().enumerate() {
            search.next[last[list]] = tail;
            search.prev[tail] = last[list];
        }
        search
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    /// Removes an operation's call (and return, if any) from its list, or
    /// puts the next operation of its class in its place.
    fn lift(&mut self, call: usize) {
        if let Some(twin) = self.successor[call] {
            let (prev, next) = (self.prev[call], self.next[call]);
            self.prev[twin] = prev;
            self.next[twin] = next;
            self.next[prev] = twin;
            self.prev[next] = twin;
        } else {
            self.unlink(call);
        }
        if let Some(ret) = self.partner[call] {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`Search::lift`] (lifts are undone in LIFO order).
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.partner[call] {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// The first return node in the main list: only operations called before
    /// it can be linearized next.
    fn first_return(&self) -> usize {
        let mut node = self.next[HEAD];
        while self.is_call[node] {
            node = self.next[node];
        }
        node
    }

    /// Records a configuration from which no linearization exists.
    fn note_failure(&mut self, state: Value) {
        let node = self.first_return();
        if node > self.frontier {
            self.frontier = node;
            self.frontier_states.clear();
        }
        if node == self.frontier
            && self.frontier_states.len() < MAX_REPORTED_STATES
            && !self.frontier_states.contains(&state)
        {
            self.frontier_states.push(state);
        }
    }

    /// Whether `op` is a candidate in `pass`, given that it would take the
    /// register from `state` to `next`. `after_unknown` tells whether the last
    /// linearized operation had an unknown outcome: a blind write right after
    /// it is not tried, since skipping the unknown one is at least as good.
    fn wanted(
        op: &Checked,
        pass: Pass,
        (state, next): (Value, Value),
        after_unknown: bool,
    ) -> bool {
        let blind = after_unknown && matches!(op.step, Step::Write(_));
        match pass {
            Pass::Pure => op.step.is_pure(),
            Pass::Impure => !op.step.is_pure() && !blind,
            Pass::Unknown => next != state && !blind,
        }
    }

    fn run(&mut self, initial: Value, max_steps: u64) -> Verdict {
        let ops = self.ops;
        let unknowns = ops.iter().filter(|op| op.unknown).count();
        let mut known_remaining = ops.len() - unknowns;
        let mut linearized = Linearized::new(known_remaining, unknowns);
        // The register value and whether the last linearized operation had an
        // unknown outcome (which restricts the candidates, see `wanted`).
        let state_word =
            |state: Value, after_unknown: bool| (state as u64) << 1 | u64::from(after_unknown);
        let mut state = initial;
        let mut after_unknown = false;
        // Memoization: configurations entered, by bucket (see `Linearized::bucket`).
        let mut cache: HashMap<Box<[u64]>, Vec<Visit>> = HashMap::new();
        let mut key = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut node = self.next[HEAD];
        let mut pass = Pass::Pure;
        // During the unknown pass: the first pending return, before which
        // operations must have been called to be candidates.
        let mut frontier = HEAD;
        let unknown_tail = self.unknown_head + 1;
        let mut steps = 0u64;
        loop {
            if known_remaining == 0 {
                // Every remaining operation has an unknown outcome: leave them out.
                return Verdict::Linearizable;
            }
            if steps >= max_steps {
                return Verdict::Exhausted;
            }
            steps += 1;
            let candidate = match pass {
                Pass::Pure | Pass::Impure => self.is_call[node],
                Pass::Unknown => node != unknown_tail,
            };
            if candidate {
                let op = &ops[self.node_op[node]];
                // The unknown list is not in call order.
                let called = pass != Pass::Unknown || node < frontier;
                let next_state = op
                    .step
                    .apply(state)
                    .filter(|&next| called && Self::wanted(op, pass, (state, next), after_unknown));
                let Some(next_state) = next_state else {
                    node = self.next[node];
                    continue;
                };
                let prev_bounds = linearized.insert(op);
                linearized.bucket(state_word(next_state, op.unknown), &mut key);
                let used = &linearized.unknown;
                let visit = match cache.get_mut(&key[..]) {
                    Some(visits) if visits.iter().any(|visit| visit.covers(used)) => None,
                    Some(visits) => {
                        visits.push(Visit::new(used));
                        Some(visits.len() - 1)
                    }
                    None => {
                        cache.insert(key.as_slice().into(), vec![Visit::new(used)]);
                        Some(0)
                    }
                };
                if let Some(visit) = visit {
                    stack.push(Frame {
                        node,
                        pass,
                        prev_state: state,
                        prev_bounds,
                        visit,
                    });
                    self.deepest = self.deepest.max(stack.len());
                    state = next_state;
                    after_unknown = op.unknown;
                    self.lift(node);
                    known_remaining -= usize::from(!op.unknown);
                    node = self.next[HEAD];
                    pass = Pass::Pure;
                    continue;
                }
                linearized.remove(op, prev_bounds);
                if pass != Pass::Pure {
                    node = self.next[node];
                    continue;
                }
                // The forced choice leads to a failed configuration, so this
                // configuration fails too.
            } else {
                // Every candidate of this pass has been tried.
                match pass {
                    Pass::Pure => {
                        pass = Pass::Impure;
                        node = self.next[HEAD];
                        continue;
                    }
                    Pass::Impure => {
                        pass = Pass::Unknown;
                        frontier = node;
                        node = self.next[self.unknown_head];
                        continue;
                    }
                    Pass::Unknown => {}
                }
            }
            // The current configuration cannot be extended: backtrack.
            loop {
                self.note_failure(state);
                let Some(frame) = stack.pop() else {
                    return Verdict::Violated;
                };
                linearized.bucket(state_word(state, after_unknown), &mut key);
                if let Some(visits) = cache.get_mut(&key[..]) {
                    visits[frame.visit].failed = true;
                }
                self.unlift(frame.node);
                let op = &ops[self.node_op[frame.node]];
                linearized.remove(op, frame.prev_bounds);
                known_remaining += usize::from(!op.unknown);
                state = frame.prev_state;
                after_unknown = stack
                    .last()
                    .is_some_and(|frame| ops[self.node_op[frame.node]].unknown);
                if frame.pass != Pass::Pure {
                    node = self.next[frame.node];
                    pass = frame.pass;
                    frontier = self.first_return();
                    break;
                }
            }
        }
    }
}

/// Formats a register value for messages.
fn show(value: Option<&[u8]>) -> String {
    match value {
        None => "<absent>".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
            _ => {
                let mut hex = String::from("0x");
                for byte in bytes {
                    let _ = write!(hex, "{byte:02x}");
                }
                hex
            }
        },
    }
}

/// One-line description of an operation for messages.
fn describe(operation: &Operation) -> String {
    let op = match &operation.op {
        Op::Read => "read".to_owned(),
        Op::Write(value) => format!("write {}", show(value.as_deref())),
        Op::Cas { expect, new } => format!(
            "cas {} -> {}",
            show(expect.as_deref()),
            show(new.as_deref())
        ),
    };
    let outcome = match &operation.outcome {
        Outcome::Read(value) => show(value.as_deref()),
        Outcome::Write => "ok".to_owned(),
        Outcome::Cas(true) => "succeeded".to_owned(),
        Outcome::Cas(false) => "failed".to_owned(),
        Outcome::Unknown => "unknown".to_owned(),
    };
    let ret = match operation.ret {
        Some(ret) => format!("returned at {ret}"),
        None => "never returned".to_owned(),
    };
    format!(
        "client {}: {op} => {outcome}, called at {}, {ret}",
        operation.client, operation.call
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str) -> Option<Vec<u8>> {
        Some(text.as_bytes().to_vec())
    }

    fn write(client: u64, call: u64, ret: u64, value: Option<Vec<u8>>) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            op: Op::Write(value),
            outcome: Outcome::Write,
        }
    }

    fn read(client: u64, call: u64, ret: u64, value: Option<Vec<u8>>) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            op: Op::Read,
            outcome: Outcome::Read(value),
        }
    }

    fn cas(
        client: u64,
        call: u64,
        ret: u64,
        expect: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        succeeded: bool,
    ) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            op: Op::Cas { expect, new },
            outcome: Outcome::Cas(succeeded),
        }
    }

    fn unknown(client: u64, call: u64, op: Op) -> Operation {
        Operation {
            client,
            call,
            ret: None,
            op,
            outcome: Outcome::Unknown,
        }
    }

    fn rejected(initial: Option<Vec<u8>>, history: &[Operation]) -> String {
        let violation = check(initial, history).expect_err("history must be rejected");
        assert!(
            violation.message.starts_with("history is not linearizable"),
            "{violation}"
        );
        violation.message
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(None, &[]), Ok(()));
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            read(1, 0, 1, None),
            write(1, 2, 3, val("a")),
            read(2, 4, 5, val("a")),
            cas(2, 6, 7, val("a"), val("b"), true),
            cas(1, 8, 9, val("a"), val("c"), false),
            read(1, 10, 11, val("b")),
            write(2, 12, 13, None),
            read(1, 14, 15, None),
            cas(1, 16, 17, None, val("d"), true),
            read(2, 18, 19, val("d")),
        ];
        assert_eq!(check(None, &history), Ok(()));
    }

    #[test]
    fn concurrent_writes_with_a_single_valid_order() {
        // Both writes overlap; the later read of "a" forces "b" before "a",
        // and the read of "b" to fall between them.
        let mut history = vec![
            write(1, 0, 10, val("a")),
            write(2, 5, 15, val("b")),
            read(3, 1, 3, val("x")),
            read(3, 20, 25, val("a")),
            read(4, 8, 30, val("b")),
        ];
        assert_eq!(check(val("x"), &history), Ok(()));
        // Once "a" was read after both writes completed, "b" can't come back.
        history.push(read(3, 31, 32, val("b")));
        let message = rejected(val("x"), &history);
        assert!(message.contains("operation #5 "), "{message}");
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        let history = [
            write(1, 0, 1, val("a")),
            write(1, 2, 3, val("b")),
            read(2, 4, 5, val("a")),
        ];
        let message = rejected(None, &history);
        assert!(message.contains("operation #2 "), "{message}");
        assert!(message.contains("called at 4, returned at 5"), "{message}");
        // "b" is never read, so it is reported as such.
        assert!(
            message.ends_with("take effect: <a value never read back>)"),
            "{message}"
        );
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        let history = [
            write(1, 10, 20, val("new")),
            read(2, 15, 18, val("old")),
            read(2, 25, 30, val("old")),
        ];
        let message = rejected(val("old"), &history);
        assert!(message.contains("operation #2 "), "{message}");
        // A read concurrent with the write may still see the new value.
        assert_eq!(
            check(
                val("old"),
                &[history[0].clone(), read(2, 12, 14, val("new"))]
            ),
            Ok(())
        );
    }

    #[test]
    fn cas_succeeding_twice_on_the_same_value_is_rejected() {
        let sequential = [
            cas(1, 0, 1, val("a"), val("b"), true),
            cas(2, 2, 3, val("a"), val("c"), true),
        ];
        rejected(val("a"), &sequential);
        let concurrent = [
            cas(1, 0, 10, val("a"), val("b"), true),
            cas(2, 0, 10, val("a"), val("c"), true),
        ];
        rejected(val("a"), &concurrent);
        // With a write of "a" in between, both can succeed.
        let concurrent_with_write = [
            cas(1, 0, 10, val("a"), val("b"), true),
            cas(2, 0, 10, val("a"), val("c"), true),
            write(3, 0, 10, val("a")),
        ];
        assert_eq!(check(val("a"), &concurrent_with_write), Ok(()));
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        let timed_out = unknown(1, 0, Op::Write(val("x")));
        // Took effect.
        assert_eq!(
            check(None, &[timed_out.clone(), read(2, 5, 6, val("x"))]),
            Ok(())
        );
        // Never took effect.
        assert_eq!(
            check(None, &[timed_out.clone(), read(2, 5, 6, None)]),
            Ok(())
        );
        // Took effect late.
        assert_eq!(
            check(
                None,
                &[
                    timed_out.clone(),
                    read(2, 5, 6, None),
                    read(2, 100, 101, val("x"))
                ]
            ),
            Ok(())
        );
        // Once seen, it cannot be undone without another write.
        rejected(
            None,
            &[
                timed_out.clone(),
                read(2, 5, 6, val("x")),
                read(2, 7, 8, None),
            ],
        );
        // It cannot take effect before its call.
        rejected(
            None,
            &[read(2, 0, 1, val("x")), unknown(1, 2, Op::Write(val("x")))],
        );
        // It can take effect after a later acknowledged write...
        let mut history = vec![
            timed_out,
            write(3, 1, 2, val("y")),
            read(2, 3, 4, val("y")),
            read(2, 5, 6, val("x")),
        ];
        assert_eq!(check(None, &history), Ok(()));
        // ... but only once.
        history.extend([write(3, 7, 8, val("y")), read(2, 9, 10, val("x"))]);
        let message = rejected(None, &history);
        assert!(message.contains("operation #5 "), "{message}");
        // Two timed-out writes of the same value can take effect twice.
        history.push(unknown(4, 1, Op::Write(val("x"))));
        assert_eq!(check(None, &history), Ok(()));
    }

    #[test]
    fn the_first_violation_is_reported() {
        let history = [
            write(1, 0, 1, val("a")),
            read(2, 2, 3, val("a")),
            write(1, 4, 5, val("b")),
            read(2, 6, 7, val("a")),
            read(3, 8, 9, None),
            read(2, 10, 11, val("b")),
        ];
        let message = rejected(None, &history);
        assert!(message.contains("operation #3 "), "{message}");
        assert!(message.contains("client 2: read => \"a\""), "{message}");
    }

    #[test]
    fn known_outcome_without_return_time_is_still_checked() {
        let mut late_read = read(2, 5, 0, val("a"));
        late_read.ret = None;
        assert_eq!(
            check(None, &[late_read.clone(), write(1, 10, 11, val("a"))]),
            Ok(())
        );
        rejected(None, &[late_read, write(1, 0, 1, val("b"))]);
    }

    #[test]
    fn unknown_cas_and_unknown_reads() {
        let timed_out = unknown(
            1,
            0,
            Op::Cas {
                expect: val("a"),
                new: val("b"),
            },
        );
        let applied = [timed_out.clone(), read(2, 5, 6, val("b"))];
        assert_eq!(check(val("a"), &applied), Ok(()));
        let not_applied = [timed_out.clone(), read(2, 5, 6, val("a"))];
        assert_eq!(check(val("a"), &not_applied), Ok(()));
        // It can only swap from "a".
        assert!(check(val("z"), &applied).is_err());
        // Unknown reads are ignored, whatever they would have returned.
        let history = [timed_out, unknown(3, 1, Op::Read), read(2, 5, 6, val("a"))];
        assert_eq!(check(val("a"), &history), Ok(()));
    }

    #[test]
    fn malformed_histories_are_reported() {
        let backwards = [write(1, 10, 5, val("a"))];
        let message = check(None, &backwards).unwrap_err().message;
        assert!(message.starts_with("malformed history"), "{message}");
        let mismatched = [Operation {
            client: 1,
            call: 0,
            ret: Some(1),
            op: Op::Read,
            outcome: Outcome::Write,
        }];
        let message = check(None, &mismatched).unwrap_err().message;
        assert!(message.starts_with("malformed history"), "{message}");
    }

    #[test]
    fn budget_exhaustion_is_reported() {
        let history = random_history(7, &profiles(500)[1]);
        let error = check_with_limit(None, &history, 10).unwrap_err();
        assert!(
            error.message.starts_with("search budget exhausted"),
            "{error}"
        );
        assert_eq!(check(None, &history), Ok(()));
    }

    /// Tiny xorshift64 generator (deterministic, no crates).
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x % bound
        }
    }

    enum Phase {
        Idle,
        Called { call: u64, op: Op },
        Applied { call: u64, op: Op, outcome: Outcome },
    }

    /// Shape of a generated history.
    struct Profile {
        clients: u64,
        /// Number of operations (a few more may be appended at the end).
        len: usize,
        /// Chance (percent) that an idle client starts an operation when
        /// scheduled: 100 keeps every client busy all the time.
        busy_percent: u64,
        /// Chance (per mille) that an operation times out, both before and
        /// after taking effect; it is then recorded with an unknown outcome.
        unknown_per_mille: u64,
        /// `Some(n)`: values are drawn from `n` possibilities (absent included),
        /// so values recur; `None`: every write stores a fresh value.
        alphabet: Option<u64>,
    }

    /// Simulates clients sharing a sequential register (initially absent):
    /// each operation takes effect at a random instant between its call and
    /// its return, so the history is linearizable by construction.
    fn random_history(seed: u64, profile: &Profile) -> Vec<Operation> {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut register: Option<Vec<u8>> = None;
        // Values the register held, most recent last.
        let mut installed: Vec<Option<Vec<u8>>> = vec![None];
        let mut phases: Vec<Phase> = (0..profile.clients).map(|_| Phase::Idle).collect();
        let mut history = Vec::with_capacity(profile.len);
        let mut now = 0;
        let mut fresh = 0;
        let mut value = |rng: &mut XorShift| match profile.alphabet {
            Some(alphabet) => match rng.below(alphabet) {
                0 => None,
                k => val(&format!("v{k}")),
            },
            None if rng.below(10) == 0 => None,
            None => {
                fresh += 1;
                val(&format!("fresh-{fresh}"))
            }
        };
        while history.len() < profile.len {
            now += 1 + rng.below(3);
            let client = rng.below(profile.clients);
            let phase = &mut phases[client as usize];
            *phase = match std::mem::replace(phase, Phase::Idle) {
                Phase::Idle if rng.below(100) < profile.busy_percent => {
                    let op = match rng.below(10) {
                        0..=3 => Op::Read,
                        4..=6 => Op::Write(value(&mut rng)),
                        _ => {
                            // Mostly the current or a recent value, as a
                            // read-modify-write client would do.
                            let back = 1 + rng.below(3) as usize;
                            let expect = match rng.below(3) {
                                0 => value(&mut rng),
                                _ => installed[installed.len().saturating_sub(back)].clone(),
                            };
                            Op::Cas {
                                expect,
                                new: value(&mut rng),
                            }
                        }
                    };
                    Phase::Called { call: now, op }
                }
                Phase::Idle => Phase::Idle,
                Phase::Called { call, op } if rng.below(1000) < profile.unknown_per_mille => {
                    history.push(unknown(client, call, op));
                    Phase::Idle
                }
                Phase::Called { call, op } => {
                    let outcome = match &op {
                        Op::Read => Outcome::Read(register.clone()),
                        Op::Write(new) => {
                            register.clone_from(new);
                            installed.push(register.clone());
                            Outcome::Write
                        }
                        Op::Cas { expect, new } => {
                            let succeeded = register == *expect;
                            if succeeded {
                                register.clone_from(new);
                                installed.push(register.clone());
                            }
                            Outcome::Cas(succeeded)
                        }
                    };
                    Phase::Applied { call, op, outcome }
                }
                Phase::Applied { call, op, .. } if rng.below(1000) < profile.unknown_per_mille => {
                    history.push(unknown(client, call, op));
                    Phase::Idle
                }
                Phase::Applied { call, op, outcome } => {
                    history.push(Operation {
                        client,
                        call,
                        ret: Some(now),
                        op,
                        outcome,
                    });
                    Phase::Idle
                }
            };
        }
        // Operations that took effect must appear in the history.
        for (client, phase) in (0..).zip(phases) {
            if let Phase::Applied { call, op, outcome } = phase {
                now += 1;
                history.push(Operation {
                    client,
                    call,
                    ret: Some(now),
                    op,
                    outcome,
                });
            }
        }
        history
    }

    /// Profiles for the randomized tests: unique values with timeouts (the
    /// usual shape of system tests), and a tiny alphabet where values recur.
    fn profiles(len: usize) -> [Profile; 3] {
        [
            Profile {
                clients: 16,
                len,
                busy_percent: 30,
                unknown_per_mille: 15,
                alphabet: None,
            },
            Profile {
                clients: 16,
                len,
                busy_percent: 100,
                unknown_per_mille: 15,
                alphabet: None,
            },
            Profile {
                clients: 16,
                len,
                busy_percent: 100,
                unknown_per_mille: 0,
                alphabet: Some(5),
            },
        ]
    }

    #[test]
    fn random_linearizable_histories_are_accepted_and_corruptions_rejected() {
        for (kind, profile) in profiles(1000).iter().enumerate() {
            for seed in 1..=8 {
                let mut history = random_history(seed, profile);
                if let Err(violation) = check(None, &history) {
                    panic!("profile {kind}, seed {seed}: valid history rejected: {violation}");
                }
                let mut rng = XorShift(seed);
                let start = rng.below(history.len() as u64) as usize;
                let corrupted = (start..history.len())
                    .chain(0..start)
                    .find(|&i| matches!(history[i].outcome, Outcome::Read(_)))
                    .expect("history has a completed read");
                history[corrupted].outcome = Outcome::Read(val("never-written"));
                let message = rejected(None, &history);
                assert!(
                    message.contains(&format!("operation #{corrupted} ")),
                    "profile {kind}, seed {seed}: corrupted #{corrupted}: {message}"
                );
            }
        }
    }

    /// Exhaustive reference checker: tries every order that respects real
    /// time, leaving out any subset of the unknown-outcome operations.
    fn brute_force(state: &Option<Vec<u8>>, history: &[Operation], done: &mut [bool]) -> bool {
        let pending = |(operation, &done): (&Operation, &bool)| {
            !done && operation.outcome != Outcome::Unknown
        };
        if !history.iter().zip(done.iter()).any(pending) {
            return true;
        }
        for (i, operation) in history.iter().enumerate() {
            let blocked = history
                .iter()
                .zip(done.iter())
                .filter(|&entry| pending(entry))
                .any(|(other, _)| other.ret.is_some_and(|ret| ret < operation.call));
            if done[i] || blocked {
                continue;
            }
            let next = match (&operation.op, &operation.outcome) {
                (Op::Read, Outcome::Read(value)) => (value == state).then(|| state.clone()),
                (Op::Read, _) => Some(state.clone()),
                (Op::Write(value), _) => Some(value.clone()),
                (Op::Cas { expect, new }, outcome) => {
                    let swap = expect == state;
                    match outcome {
                        Outcome::Cas(succeeded) if *succeeded != swap => None,
                        _ if swap => Some(new.clone()),
                        _ => Some(state.clone()),
                    }
                }
            };
            if let Some(next) = next {
                done[i] = true;
                let found = brute_force(&next, history, done);
                done[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = XorShift(0x5EED);
        let value = |rng: &mut XorShift| match rng.below(3) {
            0 => None,
            k => val(if k == 1 { "a" } else { "b" }),
        };
        let mut verdicts = [0; 2];
        for case in 0..4000 {
            let len = 1 + rng.below(7) as usize;
            let history: Vec<Operation> = (0..len)
                .map(|_| {
                    let call = rng.below(12);
                    let (op, outcome) = match rng.below(3) {
                        0 => (Op::Read, Outcome::Read(value(&mut rng))),
                        1 => (Op::Write(value(&mut rng)), Outcome::Write),
                        _ => {
                            let op = Op::Cas {
                                expect: value(&mut rng),
                                new: value(&mut rng),
                            };
                            (op, Outcome::Cas(rng.below(2) == 0))
                        }
                    };
                    let mut operation = Operation {
                        client: rng.below(3),
                        call,
                        ret: Some(call + rng.below(6)),
                        op,
                        outcome,
                    };
                    if rng.below(5) == 0 {
                        operation.ret = None;
                        operation.outcome = Outcome::Unknown;
                    }
                    operation
                })
                .collect();
            let initial = value(&mut rng);
            let expected = brute_force(&initial, &history, &mut vec![false; len]);
            let verdict = check(initial, &history);
            assert_eq!(
                verdict.is_ok(),
                expected,
                "case {case}: {history:?}: {verdict:?}"
            );
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts.iter().all(|&count| count > 500), "{verdicts:?}");
    }

    #[test]
    fn large_histories_need_few_steps_per_operation() {
        for profile in profiles(4000) {
            let history = random_history(42, &profile);
            let budget = 1000 * history.len() as u64;
            if let Err(violation) = check_with_limit(None, &history, budget) {
                panic!("{violation}");
            }
        }
    }
}
