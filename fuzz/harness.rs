// The fuzzing harness shared by the `fuzz` test modules of agenda-calendar,
// agenda-db and agenda-vip. Each includes this file with `include!` inside a
// `#[cfg(test)]` module, so it holds items only (no inner attributes) and
// uses nothing but std. docs/FUZZING.md says how it is used.
//
// A target is a function of arbitrary bytes that panics when a property
// breaks (a panic of the code under test is one too). It runs two ways:
//
// - bounded, as an ordinary `cargo test` (so in `make test`): the seeds of
//   fuzz/seeds/TARGET/, then a fixed number of inputs, each either made by
//   the target's own generator (structure-aware: rules, JSON, envelopes,
//   adverts) or a havoc-style mutation (bit flips, interesting values,
//   splices, words of fuzz/dict/TARGET.dict) of one made before. The run is
//   deterministic; AGENDA_FUZZ_SEED changes it and AGENDA_FUZZ_CASES sets
//   the number of cases (AGENDA_FUZZ_SCALE multiplies the default).
// - coverage-guided under AFL++ (`make fuzz`, fuzz/run.sh): the crate's test
//   binary, built by `cargo afl`, runs its ignored test `fuzz::afl`, which
//   reads inputs from standard input in AFL's persistent mode; the
//   AGENDA_FUZZ_TARGET variable names the target. With AGENDA_FUZZ_INPUT
//   set to a file or a directory (a crash AFL saved, say), the same test
//   replays those inputs without AFL; with AGENDA_FUZZ_GENERATE set to a
//   directory, it writes inputs of the target's generator there (AFL's
//   starting corpus, beside the seeds).

/// One fuzz target.
pub struct Target {
    /// Its name: the directory of its seeds, its dictionary, the value of
    /// AGENDA_FUZZ_TARGET.
    pub name: &'static str,
    /// Runs one input; panics when a property breaks.
    pub run: fn(&[u8]),
    /// Makes a well-formed-ish input from random choices.
    pub generate: fn(&mut Rng) -> Vec<u8>,
}

/// A small deterministic generator (SplitMix64): no dependency, the same
/// sequence everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        n <= 1 || self.next_u64().is_multiple_of(n)
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Largest input the bounded run makes (AFL has its own limit).
pub const MAX_INPUT: usize = 8192;

/// Bytes that often sit on a parser's edges.
const INTERESTING_BYTES: &[u8] = b"\x00\x01\x7f\x80\xff09+-:;,=.\"{}[]\\\n\r\t TZ";

/// Numbers that often sit on a parser's edges, as text.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "7",
    "24",
    "31",
    "53",
    "60",
    "61",
    "255",
    "256",
    "366",
    "367",
    "9999",
    "10000",
    "65535",
    "65536",
    "2147483647",
    "-2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "1e999",
    "0.5",
    "00000000000000000000000001",
];

/// Text that often breaks a text handler: a NUL, controls, a lone
/// continuation byte, a cut sequence, overlong and surrogate encodings,
/// combining marks, right-to-left, four-byte characters.
const INTERESTING_TEXT: &[&[u8]] = &[
    b"\x00",
    b"\x1b[0m",
    b"\x80",
    b"\xe2\x82",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    "e\u{301}".as_bytes(),
    "\u{202e}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{1f600}".as_bytes(),
    "\u{ffff}".as_bytes(),
    "\u{3000}".as_bytes(),
    "\u{85}".as_bytes(),
];

/// One havoc step: changes `input` in one random way.
fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, dict: &[Vec<u8>], pool: &[Vec<u8>]) {
    let at = |rng: &mut Rng, v: &Vec<u8>| rng.below(v.len() + 1);
    match rng.below(14) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = rng.next_u64() as u8;
        }
        2 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = *rng.pick(INTERESTING_BYTES);
        }
        3 => {
            let i = at(rng, input);
            let b = *rng.pick(INTERESTING_BYTES);
            input.insert(i, b);
        }
        4 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = 1 + rng.below((input.len() - i).min(16));
            input.drain(i..i + n);
        }
        5 if !input.is_empty() => {
            // Duplicate a slice somewhere.
            let i = rng.below(input.len());
            let n = 1 + rng.below((input.len() - i).min(32));
            let chunk = input[i..i + n].to_vec();
            let j = at(rng, input);
            input.splice(j..j, chunk);
        }
        6 | 7 if !dict.is_empty() => {
            let word = rng.pick(dict).clone();
            let i = at(rng, input);
            if rng.one_in(2) && i + word.len() <= input.len() {
                input[i..i + word.len()].copy_from_slice(&word);
            } else {
                input.splice(i..i, word);
            }
        }
        8 => {
            // Replace a run of digits (or insert) with an interesting number.
            let number = rng.pick(INTERESTING_NUMBERS).as_bytes().to_vec();
            let starts: Vec<usize> = (0..input.len())
                .filter(|&i| {
                    input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit())
                })
                .collect();
            if starts.is_empty() {
                let i = at(rng, input);
                input.splice(i..i, number);
            } else {
                let s = *rng.pick(&starts);
                let mut e = s;
                while e < input.len() && input[e].is_ascii_digit() {
                    e += 1;
                }
                input.splice(s..e, number);
            }
        }
        9 => {
            let text = rng.pick(INTERESTING_TEXT).to_vec();
            let i = at(rng, input);
            input.splice(i..i, text);
        }
        10 if !pool.is_empty() => {
            // Splice: our head, another input's tail.
            let other = rng.pick(pool);
            let i = at(rng, input);
            let j = rng.below(other.len() + 1);
            input.truncate(i);
            input.extend_from_slice(&other[j..]);
        }
        11 if !input.is_empty() => {
            let i = rng.below(input.len());
            input.truncate(i);
        }
        12 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = if rng.one_in(2) {
                input[i].wrapping_add(1)
            } else {
                input[i].wrapping_sub(1)
            };
        }
        _ => {
            let extra = rng.bytes(8);
            let i = at(rng, input);
            input.splice(i..i, extra);
        }
    }
}

/// A havoc-style mutation: one to eight stacked changes.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, dict: &[Vec<u8>], pool: &[Vec<u8>]) {
    let steps = 1 << rng.below(4);
    for _ in 0..steps {
        mutate_once(rng, input, dict, pool);
    }
    input.truncate(MAX_INPUT);
}

/// The repository's `fuzz` directory, found upwards from the crate.
pub fn fuzz_dir() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("fuzz");
        if candidate.join("harness.rs").is_file() {
            return candidate;
        }
        assert!(
            dir.pop(),
            "no fuzz/ directory above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

/// The seeds of `target` (fuzz/seeds/TARGET/*), sorted by name.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("seed directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// The words of fuzz/dict/TARGET.dict (AFL's format: `name="value"` lines
/// with `\\`, `\"` and `\xNN` escapes; `#` starts a comment).
pub fn dict(target: &str) -> Vec<Vec<u8>> {
    let path = fuzz_dir().join("dict").join(format!("{target}.dict"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let mut words = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('"'), line.rfind('"')) else {
            continue;
        };
        if close <= open {
            continue;
        }
        let raw = &line.as_bytes()[open + 1..close];
        let mut word = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && i + 1 < raw.len() {
                if raw[i + 1] == b'x' && i + 3 < raw.len() {
                    let hex = std::str::from_utf8(&raw[i + 2..i + 4]).unwrap_or("");
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        word.push(b);
                        i += 4;
                        continue;
                    }
                }
                word.push(raw[i + 1]);
                i += 2;
            } else {
                word.push(raw[i]);
                i += 1;
            }
        }
        words.push(word);
    }
    words
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// An input as a Rust byte string literal, to paste into a regression test.
pub fn literal(input: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &b in input {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

fn run_one(t: &Target, input: &[u8], what: &str, seed: u64) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.run)(input)));
    if let Err(cause) = outcome {
        let cause = cause
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = std::env::temp_dir().join("agenda-fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{}-{seed:x}-{}", t.name, what.replace(' ', "-")));
        let _ = std::fs::write(&file, input);
        panic!(
            "fuzz target {} failed on {what} (AGENDA_FUZZ_SEED={seed:#x}): {cause}\n\
             input: {}\n\
             saved in {}; replay it with AGENDA_FUZZ_TARGET={} AGENDA_FUZZ_INPUT={} \
             cargo test -p {} --lib fuzz::afl -- --ignored --nocapture",
            t.name,
            literal(input),
            file.display(),
            t.name,
            file.display(),
            env!("CARGO_PKG_NAME"),
        );
    }
}

/// The bounded run of `t`: its seeds, then `default_cases` inputs (or
/// AGENDA_FUZZ_CASES, or the default times AGENDA_FUZZ_SCALE). Returns the
/// number of inputs run.
pub fn bounded(t: &Target, default_cases: u64) -> u64 {
    let cases = env_u64("AGENDA_FUZZ_CASES")
        .unwrap_or_else(|| default_cases.saturating_mul(env_u64("AGENDA_FUZZ_SCALE").unwrap_or(1)));
    let name_hash = t.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let seed = env_u64("AGENDA_FUZZ_SEED").unwrap_or(0x5eed_0013) ^ name_hash;
    let mut rng = Rng::new(seed);
    let seeds = seeds(t.name);
    let words = dict(t.name);
    for (i, s) in seeds.iter().enumerate() {
        run_one(t, s, &format!("seed {i}"), seed);
    }
    // Mutations start from the seeds and from what was made before: a
    // ring of recent inputs beside the seeds, so changes pile up.
    let mut recent: Vec<Vec<u8>> = Vec::new();
    for i in 0..cases {
        let input = if rng.one_in(3) || (seeds.is_empty() && recent.is_empty()) {
            (t.generate)(&mut rng)
        } else {
            let mut x = if recent.is_empty() || (!seeds.is_empty() && rng.one_in(2)) {
                rng.pick(&seeds).clone()
            } else {
                rng.pick(&recent).clone()
            };
            mutate(&mut rng, &mut x, &words, &seeds);
            x
        };
        run_one(t, &input, &format!("case {i}"), seed);
        if recent.len() < 256 {
            recent.push(input);
        } else {
            let slot = rng.below(recent.len());
            recent[slot] = input;
        }
    }
    let total = seeds.len() as u64 + cases;
    println!("fuzz {}: {total} inputs (seed {seed:#x})", t.name);
    total
}

/// The AFL entry point (the ignored test `fuzz::afl` of each crate): runs
/// the target named by AGENDA_FUZZ_TARGET on standard input, in AFL's
/// persistent mode when built by `cargo afl`, or on the files named by
/// AGENDA_FUZZ_INPUT, or writes generated inputs to AGENDA_FUZZ_GENERATE.
/// Does nothing without AGENDA_FUZZ_TARGET.
pub fn afl(targets: &[Target]) {
    let Ok(name) = std::env::var("AGENDA_FUZZ_TARGET") else {
        eprintln!("AGENDA_FUZZ_TARGET is not set: nothing to fuzz");
        return;
    };
    let Some(t) = targets.iter().find(|t| t.name == name) else {
        let names: Vec<_> = targets.iter().map(|t| t.name).collect();
        panic!("no fuzz target {name:?} in this crate; it has {names:?}");
    };
    if let Ok(dir) = std::env::var("AGENDA_FUZZ_GENERATE") {
        // Inputs of the target's generator, to start AFL from.
        let n = env_u64("AGENDA_FUZZ_CASES").unwrap_or(16);
        let mut rng = Rng::new(env_u64("AGENDA_FUZZ_SEED").unwrap_or(0x5eed_0013));
        std::fs::create_dir_all(&dir).expect("AGENDA_FUZZ_GENERATE directory");
        for i in 0..n {
            let path = std::path::Path::new(&dir).join(format!("gen-{i:03}"));
            std::fs::write(&path, (t.generate)(&mut rng)).expect("write a generated input");
        }
        return;
    }
    if let Ok(path) = std::env::var("AGENDA_FUZZ_INPUT") {
        let path = std::path::PathBuf::from(path);
        let mut files = vec![path.clone()];
        if path.is_dir() {
            files = std::fs::read_dir(&path)
                .expect("AGENDA_FUZZ_INPUT directory")
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
        }
        for f in files {
            let input = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!("{}: {}", f.display(), literal(&input));
            let started = std::time::Instant::now();
            (t.run)(&input);
            eprintln!("  ok in {:?}", started.elapsed());
        }
        return;
    }
    // AFL sees a crash only as a signal: a panic aborts.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        std::process::abort();
    }));
    persistent_loop(t.run);
}

#[cfg(fuzzing)]
fn persistent_loop(run: fn(&[u8])) {
    use std::io::Read as _;
    extern "C" {
        // AFL++'s runtime, linked in by `cargo afl`.
        fn __afl_persistent_loop(max_cnt: std::os::raw::c_uint) -> std::os::raw::c_int;
    }
    // Tells afl-fuzz to run the binary in persistent mode.
    #[used]
    static PERSISTENT_SIGNATURE: &[u8] = b"##SIG_AFL_PERSISTENT##\0";
    let mut input = Vec::new();
    // SAFETY: the runtime's loop function takes a count and keeps no
    // pointer of ours.
    while unsafe { __afl_persistent_loop(10_000) } != 0 {
        input.clear();
        if std::io::stdin().read_to_end(&mut input).is_ok() {
            run(&input);
        }
    }
}

#[cfg(not(fuzzing))]
fn persistent_loop(run: fn(&[u8])) {
    use std::io::Read as _;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .expect("read standard input");
    run(&input);
}
