//! The retry policy: a sans-I/O state machine for one request.
//!
//! It never sleeps, reads a clock or logs. The caller reports each attempt's
//! [`Outcome`] with the current monotonic time and gets back a [`Step`]: finish, wait
//! this long and try again, or give up. Waits are carried out by the caller's clock,
//! so tests drive every transition instantly.
//!
//! ```text
//!                 success                                  success
//!   ┌──────────┐ ───────▶ Done          ┌────────────────┐ ───────▶ Done (recovered after T)
//!   │  Normal  │                        │    Recovery    │
//!   │ try n/5  │ transient, n < 5       │   step k/10    │ transient, k < 10
//!   │          │ ─▶ wait backoff(n) ─┐  │                │ ─▶ wait (k+1)·60 s ─┐
//!   └──────────┘ ◀───────────────────┘  └────────────────┘ ◀────────────────────┘
//!      │  │ transient, n = 5                  ▲  │ transient, k = 10
//!      │  └─▶ wait 1·60 s ──────────────────────┘  └─▶ GiveUp(RecoveryFailed)
//!      │         (TIMEOUT RECOVERY MODE)                 (TIMEOUT RECOVERY FAILED)
//!      ├─ permanent (4xx, too large, TLS) ─▶ GiveUp(Permanent)   [from any state]
//!      ├─ dns/connect before the run's first success, after `tries` or
//!      │  `first_contact_budget` ─▶ GiveUp(Unreachable)          [never recovery]
//!      └─ 429 ─▶ wait Retry-After (capped) or backoff, same state: rate-limit waits
//!               do not use up tries until `max_rate_limited` in a row on one request,
//!               after which each further 429 counts as a transient failure.
//! ```
//!
//! Backoff in normal mode is exponential with "equal jitter": try n waits a random
//! time in `[d/2, d]` where `d = min(cap, base · 2^(n-1))`. The recovery ladder waits
//! `step · k` before recovery try k (60 s, 120 s, ... 600 s by default: 55 minutes).

use std::time::Duration;

use crate::client::FailureClass;

/// Every number of the policy; the defaults are the documented ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Tries per request in normal mode.
    pub(crate) tries: u32,
    /// First backoff wait in normal mode (before jitter).
    pub(crate) backoff_base: Duration,
    /// Longest backoff wait in normal mode and for 429s without Retry-After.
    pub(crate) backoff_cap: Duration,
    /// Recovery try k waits `recovery_step · k` first.
    pub(crate) recovery_step: Duration,
    /// Recovery tries before giving up.
    pub(crate) recovery_steps: u32,
    /// The longest `Retry-After` honoured.
    pub(crate) retry_after_cap: Duration,
    /// 429s in a row on one request that do not use up tries.
    pub(crate) max_rate_limited: u32,
    /// Before the run's first success, how long dns/connect failures are retried.
    pub(crate) first_contact_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            tries: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            recovery_step: Duration::from_secs(60),
            recovery_steps: 10,
            retry_after_cap: Duration::from_secs(120),
            max_rate_limited: 20,
            first_contact_budget: Duration::from_secs(60),
        }
    }
}

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Outcome {
    Success,
    Failed {
        class: FailureClass,
        /// A parsed `Retry-After`, if the response had one.
        retry_after: Option<Duration>,
    },
}

/// Why a wait was asked for (for logs and the summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// Normal-mode backoff before try `next_try`.
    Backoff { next_try: u32 },
    /// A 429: wait, then try again without using up a try.
    RateLimited,
    /// The normal tries are used up: entering recovery mode, step 1.
    EnterRecovery,
    /// The next recovery step.
    RecoveryStep { step: u32 },
}

/// Why a request was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// Retrying cannot help (4xx, body too large, TLS failure).
    Permanent,
    /// Before the run's first success the host did not resolve or accept connections.
    Unreachable,
    /// The recovery ladder is exhausted.
    RecoveryFailed,
}

/// The caller's next move.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Step {
    /// The request succeeded; `recovered_after` is the time spent in recovery mode.
    Done {
        recovered_after: Option<Duration>,
    },
    /// Sleep `wait`, then try again.
    Wait {
        wait: Duration,
        kind: WaitKind,
    },
    GiveUp(GiveUp),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Normal { failures: u32 },
    Recovery { step: u32, since: Duration },
}

/// The retry state of one request.
#[derive(Debug)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    phase: Phase,
    rate_limited_in_a_row: u32,
    /// True until the run has had any successful response.
    first_contact: bool,
    /// When the request's first attempt started.
    started: Duration,
    rng: u64,
}

impl Retry {
    /// A fresh state for one request whose first attempt starts at `started`.
    /// `first_contact` is true while the run has not yet had a successful response;
    /// `seed` feeds the jitter.
    pub(crate) fn new(
        policy: &RetryPolicy,
        first_contact: bool,
        started: Duration,
        seed: u64,
    ) -> Self {
        Retry {
            policy: *policy,
            phase: Phase::Normal { failures: 0 },
            rate_limited_in_a_row: 0,
            first_contact,
            started,
            rng: seed ^ 0x2545_F491_4F6C_DD1D,
        }
    }

    /// Whether the request is in recovery mode.
    #[cfg(test)]
    fn in_recovery(&self) -> bool {
        matches!(self.phase, Phase::Recovery { .. })
    }

    /// Feeds one attempt's outcome at monotonic time `now`; returns the next move.
    pub(crate) fn on_outcome(&mut self, outcome: Outcome, now: Duration) -> Step {
        let (class, retry_after) = match outcome {
            Outcome::Success => {
                let recovered_after = match self.phase {
                    Phase::Recovery { since, .. } => Some(now.saturating_sub(since)),
                    Phase::Normal { .. } => None,
                };
                return Step::Done { recovered_after };
            }
            Outcome::Failed { class, retry_after } => (class, retry_after),
        };
        if !class.is_transient() {
            return Step::GiveUp(GiveUp::Permanent);
        }
        if class == FailureClass::RateLimited
            && self.rate_limited_in_a_row < self.policy.max_rate_limited
        {
            self.rate_limited_in_a_row += 1;
            let wait = match retry_after {
                Some(wait) => wait.min(self.policy.retry_after_cap),
                None => self.backoff(self.rate_limited_in_a_row),
            };
            return Step::Wait {
                wait,
                kind: WaitKind::RateLimited,
            };
        }
        if class != FailureClass::RateLimited {
            self.rate_limited_in_a_row = 0;
        }
        let unreachable = matches!(class, FailureClass::Dns | FailureClass::Connect);
        if self.first_contact && unreachable {
            let failures = match self.phase {
                Phase::Normal { failures } => failures + 1,
                Phase::Recovery { .. } => self.policy.tries,
            };
            if failures >= self.policy.tries
                || now.saturating_sub(self.started) >= self.policy.first_contact_budget
            {
                return Step::GiveUp(GiveUp::Unreachable);
            }
        }
        match self.phase {
            Phase::Normal { failures } => {
                let failures = failures + 1;
                if failures < self.policy.tries {
                    self.phase = Phase::Normal { failures };
                    Step::Wait {
                        wait: self.backoff(failures),
                        kind: WaitKind::Backoff {
                            next_try: failures + 1,
                        },
                    }
                } else if self.policy.recovery_steps == 0 {
                    Step::GiveUp(GiveUp::RecoveryFailed)
                } else {
                    self.phase = Phase::Recovery {
                        step: 1,
                        since: now,
                    };
                    Step::Wait {
                        wait: self.policy.recovery_step,
                        kind: WaitKind::EnterRecovery,
                    }
                }
            }
            Phase::Recovery { step, since } => {
                if step >= self.policy.recovery_steps {
                    return Step::GiveUp(GiveUp::RecoveryFailed);
                }
                let step = step + 1;
                self.phase = Phase::Recovery { step, since };
                Step::Wait {
                    wait: self.policy.recovery_step * step,
                    kind: WaitKind::RecoveryStep { step },
                }
            }
        }
    }

    /// `min(cap, base · 2^(n-1))`, jittered into its upper half.
    fn backoff(&mut self, n: u32) -> Duration {
        let exp = self
            .policy
            .backoff_base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
        let full = exp.min(self.policy.backoff_cap);
        full / 2 + full.mul_f64(self.next_unit() / 2.0)
    }

    /// A pseudo-random number in [0, 1) (splitmix64).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (RFC 9110 IMF-fixdate)
/// measured from `now_utc`. A date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now_utc: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    let delta = date - now_utc;
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn failed(class: FailureClass) -> Outcome {
        Outcome::Failed {
            class,
            retry_after: None,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn success_on_first_try_is_done() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 1);
        assert_eq!(
            r.on_outcome(Outcome::Success, S),
            Step::Done {
                recovered_after: None
            }
        );
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_jitter() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 7);
        for n in 1..5u32 {
            match r.on_outcome(failed(FailureClass::ServerError), S * n) {
                Step::Wait {
                    wait,
                    kind: WaitKind::Backoff { next_try },
                } => {
                    assert_eq!(next_try, n + 1);
                    let full = (S * (1 << (n - 1))).min(p.backoff_cap);
                    assert!(wait >= full / 2 && wait <= full, "try {n}: {wait:?}");
                }
                other => panic!("try {n}: {other:?}"),
            }
        }
        assert!(!r.in_recovery());
    }

    #[test]
    fn backoff_is_capped() {
        let p = RetryPolicy {
            tries: 30,
            ..policy()
        };
        let mut r = Retry::new(&p, false, Duration::ZERO, 3);
        let mut last = Duration::ZERO;
        for n in 1..29 {
            if let Step::Wait { wait, .. } = r.on_outcome(failed(FailureClass::Timeout), S * n) {
                last = wait;
            }
        }
        assert!(
            last <= p.backoff_cap && last >= p.backoff_cap / 2,
            "{last:?}"
        );
    }

    #[test]
    fn fifth_transient_failure_enters_recovery_then_climbs_the_ladder() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 1);
        for n in 1..5 {
            assert!(matches!(
                r.on_outcome(failed(FailureClass::Reset), S * n),
                Step::Wait { .. }
            ));
        }
        assert_eq!(
            r.on_outcome(failed(FailureClass::Reset), S * 10),
            Step::Wait {
                wait: Duration::from_secs(60),
                kind: WaitKind::EnterRecovery
            }
        );
        assert!(r.in_recovery());
        let mut total = Duration::from_secs(60);
        for step in 2..=10u32 {
            let wait = Duration::from_secs(60) * step;
            assert_eq!(
                r.on_outcome(failed(FailureClass::Timeout), S * 100),
                Step::Wait {
                    wait,
                    kind: WaitKind::RecoveryStep { step }
                }
            );
            total += wait;
        }
        assert_eq!(
            total,
            Duration::from_secs(55 * 60),
            "the ladder is 55 minutes"
        );
        assert_eq!(
            r.on_outcome(failed(FailureClass::Timeout), S * 4000),
            Step::GiveUp(GiveUp::RecoveryFailed)
        );
    }

    #[test]
    fn success_in_recovery_reports_the_time_it_took() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 1);
        for n in 1..=5 {
            r.on_outcome(failed(FailureClass::ServerError), S * n);
        }
        assert!(r.in_recovery());
        r.on_outcome(failed(FailureClass::ServerError), S * 65);
        assert_eq!(
            r.on_outcome(Outcome::Success, S * 190),
            Step::Done {
                recovered_after: Some(S * 185)
            }
        );
    }

    #[test]
    fn permanent_failures_give_up_at_once_from_any_state() {
        let p = policy();
        for class in [
            FailureClass::ClientError,
            FailureClass::TooLarge,
            FailureClass::Fatal,
        ] {
            let mut r = Retry::new(&p, false, Duration::ZERO, 1);
            assert_eq!(
                r.on_outcome(failed(class), S),
                Step::GiveUp(GiveUp::Permanent)
            );
            let mut r = Retry::new(&p, false, Duration::ZERO, 1);
            for n in 1..=5 {
                r.on_outcome(failed(FailureClass::Timeout), S * n);
            }
            assert_eq!(
                r.on_outcome(failed(class), S * 9),
                Step::GiveUp(GiveUp::Permanent)
            );
        }
    }

    #[test]
    fn rate_limits_wait_without_using_tries() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 1);
        for n in 0..p.max_rate_limited {
            match r.on_outcome(failed(FailureClass::RateLimited), S * n) {
                Step::Wait {
                    kind: WaitKind::RateLimited,
                    wait,
                } => assert!(wait <= p.backoff_cap),
                other => panic!("{other:?}"),
            }
        }
        assert!(!r.in_recovery());
        // Past the limit, 429s count as transient failures: try 2 of 5 comes next.
        assert!(matches!(
            r.on_outcome(failed(FailureClass::RateLimited), S * 99),
            Step::Wait {
                kind: WaitKind::Backoff { next_try: 2 },
                ..
            }
        ));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 1);
        let with = |secs| Outcome::Failed {
            class: FailureClass::RateLimited,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            r.on_outcome(with(7), S),
            Step::Wait {
                wait: S * 7,
                kind: WaitKind::RateLimited
            }
        );
        assert_eq!(
            r.on_outcome(with(100_000), S),
            Step::Wait {
                wait: p.retry_after_cap,
                kind: WaitKind::RateLimited
            }
        );
        // A 503 with Retry-After is still a normal transient failure (backoff).
        assert!(matches!(
            r.on_outcome(
                Outcome::Failed {
                    class: FailureClass::ServerError,
                    retry_after: Some(S * 3)
                },
                S
            ),
            Step::Wait {
                kind: WaitKind::Backoff { .. },
                ..
            }
        ));
    }

    #[test]
    fn unreachable_host_on_first_contact_never_enters_recovery() {
        let p = policy();
        let mut r = Retry::new(&p, true, Duration::ZERO, 1);
        for n in 1..5 {
            assert!(matches!(
                r.on_outcome(failed(FailureClass::Dns), S * n),
                Step::Wait {
                    kind: WaitKind::Backoff { .. },
                    ..
                }
            ));
        }
        assert_eq!(
            r.on_outcome(failed(FailureClass::Dns), S * 5),
            Step::GiveUp(GiveUp::Unreachable)
        );
    }

    #[test]
    fn first_contact_budget_cuts_slow_connect_failures_short() {
        let p = policy();
        // A first try that hangs for the whole connect timeout (60 s) uses up the
        // budget, counted from the start of the first try: about a minute in all.
        let mut r = Retry::new(&p, true, S * 5, 1);
        assert!(matches!(
            r.on_outcome(failed(FailureClass::Connect), S * 30),
            Step::Wait { .. }
        ));
        assert_eq!(
            r.on_outcome(failed(FailureClass::Connect), S * 65),
            Step::GiveUp(GiveUp::Unreachable)
        );
    }

    #[test]
    fn after_first_contact_connect_failures_go_to_recovery() {
        let p = policy();
        let mut r = Retry::new(&p, false, Duration::ZERO, 1);
        for n in 1..5 {
            r.on_outcome(failed(FailureClass::Connect), S * n);
        }
        assert_eq!(
            r.on_outcome(failed(FailureClass::Connect), S * 5),
            Step::Wait {
                wait: p.recovery_step,
                kind: WaitKind::EnterRecovery
            }
        );
    }

    #[test]
    fn first_contact_timeouts_and_5xx_are_ordinary_transient_failures() {
        let p = policy();
        let mut r = Retry::new(&p, true, Duration::ZERO, 1);
        for n in 1..=5 {
            r.on_outcome(failed(FailureClass::ServerError), S * n);
        }
        assert!(r.in_recovery(), "a server that answers is reachable");
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = time::macros::datetime!(2026-11-25 12:00:00 UTC);
        assert_eq!(parse_retry_after(" 30 ", now), Some(S * 30));
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 12:01:30 GMT", now),
            Some(S * 90)
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
