//! Tests for [`StopStrings`]: validation, hold-back, UTF-8 safety, and split invariance.

use super::*;
use crate::sampling::Xoshiro256StarStar;

fn stops(list: &[&str]) -> StopStrings {
    StopStrings::new(list.iter().map(|s| s.to_string()).collect()).unwrap()
}

/// Pushes `pieces` and returns (all emitted text, stopped, what finish returned).
fn run(matcher: &mut StopStrings, pieces: &[&str]) -> (String, bool, String) {
    let mut emitted = String::new();
    let mut stopped = false;
    for piece in pieces {
        let out = matcher.push(piece);
        assert!(!stopped || out.emit.is_empty(), "text after the stop");
        emitted.push_str(&out.emit);
        stopped |= out.stopped;
    }
    (emitted, stopped, matcher.finish())
}

#[test]
fn validation_limits() {
    let five = vec!["a".to_string(); MAX_STOPS + 1];
    assert_eq!(
        StopStrings::new(five).unwrap_err(),
        SamplingError::TooManyStops { max: 4, got: 5 }
    );
    let err = StopStrings::new(vec!["x".into(), String::new()]).unwrap_err();
    assert_eq!(err, SamplingError::EmptyStop { index: 1 });
    assert_eq!(err.to_string(), "`stop[1]` must not be empty");
    let long = "é".repeat(MAX_STOP_LEN_BYTES / 2 + 1);
    assert_eq!(
        StopStrings::new(vec![long]).unwrap_err(),
        SamplingError::StopTooLong {
            index: 0,
            max_bytes: MAX_STOP_LEN_BYTES,
            got_bytes: MAX_STOP_LEN_BYTES + 2
        }
    );
    assert!(StopStrings::new(vec!["x".repeat(MAX_STOP_LEN_BYTES); MAX_STOPS]).is_ok());
}

#[test]
fn no_stops_passes_everything_through() {
    let mut matcher = stops(&[]);
    let out = matcher.push("hello");
    assert_eq!((out.emit.as_str(), out.stopped), ("hello", false));
    assert_eq!(matcher.finish(), "");
}

#[test]
fn holds_back_a_possible_prefix_then_releases_it() {
    let mut matcher = stops(&["</s>"]);
    assert_eq!(matcher.push("Hello <").emit, "Hello ");
    assert_eq!(matcher.push("/").emit, "");
    // "</b" can no longer become "</s>": released.
    let out = matcher.push("b>");
    assert_eq!((out.emit.as_str(), out.stopped), ("</b>", false));
    assert_eq!(matcher.push(" x <").emit, " x ");
    assert_eq!(matcher.finish(), "<");
}

#[test]
fn stops_at_a_match_split_over_pushes() {
    let mut matcher = stops(&["STOP"]);
    assert_eq!(matcher.push("abc ST").emit, "abc ");
    let out = matcher.push("OP and more");
    assert_eq!((out.emit.as_str(), out.stopped), ("", true));
    assert!(matcher.is_stopped());
    assert_eq!(
        matcher.push("ignored"),
        StopOutput {
            emit: String::new(),
            stopped: true
        }
    );
    assert_eq!(matcher.finish(), "");
}

#[test]
fn match_inside_one_push_emits_the_text_before_it() {
    let mut matcher = stops(&["\n\n"]);
    let out = matcher.push("line one\n\nline two");
    assert_eq!((out.emit.as_str(), out.stopped), ("line one", true));
}

#[test]
fn first_completed_stop_wins() {
    // "bc" completes before "abcd" does, even though "abcd" starts first.
    let (emitted, stopped, _) = run(&mut stops(&["abcd", "bc"]), &["abcd"]);
    assert_eq!((emitted.as_str(), stopped), ("a", true));
    // Same end: the longer (earlier-starting) one.
    let (emitted, _, _) = run(&mut stops(&["c", "abc"]), &["xxabcx"]);
    assert_eq!(emitted, "xx");
}

#[test]
fn multi_byte_stops_and_text() {
    let mut matcher = stops(&["日本", "🙂!"]);
    // The held tail is a whole character, never half of one.
    assert_eq!(matcher.push("今日は日").emit, "今日は");
    assert_eq!(matcher.push("曜").emit, "日曜");
    assert_eq!(matcher.push("🙂").emit, "");
    assert_eq!(matcher.push("🙂").emit, "🙂");
    let out = matcher.push("!ok");
    assert_eq!((out.emit.as_str(), out.stopped), ("", true));

    let (emitted, stopped, _) = run(&mut stops(&["é"]), &["caf", "e", "\u{301}", "é", "x"]);
    // A decomposed e + combining accent is not the precomposed stop string.
    assert_eq!((emitted.as_str(), stopped), ("cafe\u{301}", true));
}

/// The text emitted up to each push: everything so far minus the longest tail that is a
/// proper prefix of a stop (brute force over char boundaries).
fn expected_emitted_so_far(text: &str, stop_list: &[&str]) -> usize {
    (0..=text.len())
        .filter(|&start| text.is_char_boundary(start))
        .find(|&start| {
            let tail = &text[start..];
            tail.is_empty() || stop_list.iter().any(|stop| stop.starts_with(tail))
        })
        .unwrap_or(text.len())
}

/// The final output by brute force: cut before the stop that completes first.
fn expected_output(text: &str, stop_list: &[&str]) -> (String, bool) {
    for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
        let head = &text[..end];
        let longest = stop_list
            .iter()
            .filter(|stop| head.ends_with(*stop))
            .map(|stop| stop.len())
            .max();
        if let Some(len) = longest {
            return (head[..end - len].to_string(), true);
        }
    }
    (text.to_string(), false)
}

/// Property test: for random texts, stops and splits, the emitted text is independent of
/// the split and equals the brute-force answer; between pushes, exactly the possible stop
/// prefix is held back.
#[test]
fn any_split_gives_the_same_output() {
    const ALPHABET: [&str; 6] = ["a", "b", "\n", "é", "日", "🙂"];
    let mut rng = Xoshiro256StarStar::seed_from_u64(99);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let mut stopped_cases = 0;
    for case in 0..3000 {
        let word = |pick: &mut dyn FnMut(usize) -> usize, max: usize| -> String {
            let len = 1 + pick(max);
            (0..len).map(|_| ALPHABET[pick(ALPHABET.len())]).collect()
        };
        let text = word(&mut pick, 30);
        let stop_count = 1 + pick(MAX_STOPS);
        let stop_list: Vec<String> = (0..stop_count).map(|_| word(&mut pick, 3)).collect();
        let stop_refs: Vec<&str> = stop_list.iter().map(String::as_str).collect();
        let (want, want_stopped) = expected_output(&text, &stop_refs);
        stopped_cases += usize::from(want_stopped);

        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for _ in 0..5 {
            let mut matcher = StopStrings::new(stop_list.clone()).unwrap();
            let mut emitted = String::new();
            let mut stopped = false;
            let mut start = 0;
            while start < text.len() {
                let end = boundaries[pick(boundaries.len())].max(start);
                let end = if end == start {
                    boundaries[boundaries.partition_point(|&b| b <= start)]
                } else {
                    end
                };
                let out = matcher.push(&text[start..end]);
                assert!(!stopped || out.emit.is_empty());
                emitted.push_str(&out.emit);
                stopped |= out.stopped;
                if !stopped {
                    let held_from = expected_emitted_so_far(&text[..end], &stop_refs);
                    assert_eq!(emitted, text[..held_from], "case {case}: held back wrong");
                }
                start = end;
            }
            emitted.push_str(&matcher.finish());
            assert_eq!(
                (emitted.as_str(), stopped),
                (want.as_str(), want_stopped),
                "case {case}: text {text:?}, stops {stop_list:?}"
            );
        }
    }
    // Both outcomes are well represented.
    assert!((500..2500).contains(&stopped_cases), "{stopped_cases}");
}
