//! The dynamic threshold: a control loop over what the prefetcher observes.
//!
//! Every tick (~[`TICK`]) the controller reads a [`Signals`] sample and moves
//! the threshold one step, within `[min, max]`:
//! - **raise** when prefetching hurts or wastes: the cache is full of
//!   unread prefetched data (pressure), prefetches are rarely used
//!   (accuracy), or the fetch path / machine is loaded;
//! - **lower** when demand reads miss and there is capacity to spare
//!   (the seed's "low hit rate and low load");
//! - otherwise hold. Raising wins over lowering: waste and load are costs
//!   paid now, a missed opportunity is not.
//!
//! The decision is a pure function of the signals and the clock, so it is
//! unit-tested with a fake clock, one test per case.

use std::time::Duration;

/// How often the loop runs.
pub const TICK: Duration = Duration::from_millis(500);
/// Accuracy is only trusted over this many completed prefetches.
pub const MIN_SAMPLES: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdConfig {
    pub initial: f32,
    pub min: f32,
    pub max: f32,
    pub step: f32,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        // 0.5: prefetch what is more likely read than not; never below 0.2
        // (80% waste), never above 0.95 (hints of 1.0 always qualify).
        ThresholdConfig {
            initial: 0.5,
            min: 0.2,
            max: 0.95,
            step: 0.05,
        }
    }
}

/// One sample of what the prefetcher sees.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    /// Demand block reads served from the cache / all demand block reads,
    /// since the last tick (None: no demand reads).
    pub hit_rate: Option<f64>,
    /// Prefetched blocks used / prefetched blocks completed, sliding window.
    pub accuracy: f64,
    pub accuracy_samples: u64,
    /// Busy fetch slots / all fetch slots (0..1).
    pub slot_occupancy: f64,
    /// Mean time demand reads waited for a fetch slot, this tick.
    pub demand_wait: Duration,
    /// 1-minute load average / cores.
    pub load_per_core: f64,
    /// Unread prefetched bytes / cache capacity.
    pub pressure: f64,
}

/// Where the thresholds of the rules sit.
pub const HIT_LOW: f64 = 0.9;
pub const ACCURACY_LOW: f64 = 0.5;
pub const PRESSURE_HIGH: f64 = 0.5;
pub const OCCUPANCY_HIGH: f64 = 0.9;
pub const OCCUPANCY_LOW: f64 = 0.5;
pub const LOAD_HIGH: f64 = 1.5;
pub const LOAD_LOW: f64 = 1.0;
pub const WAIT_HIGH: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Move {
    Raise,
    Lower,
    Hold,
}

/// The rule, as a pure function.
pub fn decide(s: &Signals) -> (Move, &'static str) {
    if s.pressure > PRESSURE_HIGH {
        return (Move::Raise, "cache full of unread prefetches");
    }
    if s.accuracy_samples >= MIN_SAMPLES && s.accuracy < ACCURACY_LOW {
        return (Move::Raise, "low prefetch accuracy");
    }
    let loaded = s.slot_occupancy > OCCUPANCY_HIGH
        || s.demand_wait > WAIT_HIGH
        || s.load_per_core > LOAD_HIGH;
    if loaded {
        return (Move::Raise, "high load");
    }
    let spare = s.slot_occupancy < OCCUPANCY_LOW && s.load_per_core < LOAD_LOW;
    if s.hit_rate.is_some_and(|h| h < HIT_LOW) && spare {
        return (Move::Lower, "low hit rate, spare capacity");
    }
    (Move::Hold, "steady")
}

/// A clock the controller can be driven by (the real one, or a fake).
pub trait Clock {
    fn now(&self) -> Duration;
}

pub struct Controller<C: Clock> {
    cfg: ThresholdConfig,
    threshold: f32,
    clock: C,
    last_tick: Duration,
    pub last_move: (Move, &'static str),
}

impl<C: Clock> Controller<C> {
    pub fn new(cfg: ThresholdConfig, clock: C) -> Self {
        let last_tick = clock.now();
        Controller {
            threshold: cfg.initial.clamp(cfg.min, cfg.max),
            cfg,
            clock,
            last_tick,
            last_move: (Move::Hold, "start"),
        }
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Applies one sample if a tick has passed since the last; returns the
    /// threshold in force.
    pub fn tick(&mut self, s: &Signals) -> f32 {
        let now = self.clock.now();
        if now.saturating_sub(self.last_tick) < TICK {
            return self.threshold;
        }
        self.last_tick = now;
        self.last_move = decide(s);
        self.threshold = match self.last_move.0 {
            Move::Raise => (self.threshold + self.cfg.step).min(self.cfg.max),
            Move::Lower => (self.threshold - self.cfg.step).max(self.cfg.min),
            Move::Hold => self.threshold,
        };
        self.threshold
    }
}

/// The process's clock.
pub struct RealClock(std::time::Instant);

impl Default for RealClock {
    fn default() -> Self {
        RealClock(std::time::Instant::now())
    }
}

impl Clock for RealClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// 1-minute load average per core (0 when unknown).
pub fn load_per_core() -> f64 {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    load / cores as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone, Default)]
    struct FakeClock(Rc<Cell<Duration>>);
    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }
    impl FakeClock {
        fn advance(&self, d: Duration) {
            self.0.set(self.0.get() + d);
        }
    }

    fn controller() -> (Controller<FakeClock>, FakeClock) {
        let clock = FakeClock::default();
        (
            Controller::new(ThresholdConfig::default(), clock.clone()),
            clock,
        )
    }

    fn calm() -> Signals {
        Signals {
            hit_rate: Some(0.95),
            accuracy: 0.9,
            accuracy_samples: 100,
            slot_occupancy: 0.1,
            demand_wait: Duration::ZERO,
            load_per_core: 0.2,
            pressure: 0.1,
        }
    }

    #[test]
    fn seed_case_low_hit_rate_and_low_load_lowers() {
        let (mut c, clock) = controller();
        let s = Signals {
            hit_rate: Some(0.3),
            ..calm()
        };
        clock.advance(TICK);
        assert!((c.tick(&s) - 0.45).abs() < 1e-6);
        // ...one step per tick, never below min.
        for _ in 0..20 {
            clock.advance(TICK);
            c.tick(&s);
        }
        assert_eq!(c.threshold(), 0.2);
    }

    #[test]
    fn seed_case_high_load_raises_and_stops_at_max() {
        let (mut c, clock) = controller();
        let s = Signals {
            hit_rate: Some(0.99),
            load_per_core: 3.0,
            ..calm()
        };
        clock.advance(TICK);
        assert!((c.tick(&s) - 0.55).abs() < 1e-6);
        assert_eq!(c.last_move.0, Move::Raise);
        for _ in 0..20 {
            clock.advance(TICK);
            c.tick(&s);
        }
        assert_eq!(c.threshold(), 0.95);
        // Busy fetch slots and demand waiting are load too.
        assert_eq!(
            decide(&Signals {
                slot_occupancy: 0.95,
                ..calm()
            })
            .0,
            Move::Raise
        );
        assert_eq!(
            decide(&Signals {
                demand_wait: Duration::from_millis(20),
                ..calm()
            })
            .0,
            Move::Raise
        );
    }

    #[test]
    fn low_hit_rate_without_spare_capacity_does_not_lower() {
        let s = Signals {
            hit_rate: Some(0.3),
            slot_occupancy: 0.7,
            ..calm()
        };
        assert_eq!(decide(&s).0, Move::Hold);
    }

    #[test]
    fn low_accuracy_raises_once_there_are_enough_samples() {
        let s = Signals {
            hit_rate: Some(0.3),
            accuracy: 0.2,
            ..calm()
        };
        assert_eq!(decide(&s).0, Move::Raise);
        let few = Signals {
            accuracy_samples: 3,
            ..s
        };
        assert_eq!(decide(&few).0, Move::Lower);
    }

    #[test]
    fn a_cache_full_of_unread_prefetches_raises_even_when_missing() {
        let s = Signals {
            hit_rate: Some(0.1),
            pressure: 0.8,
            ..calm()
        };
        assert_eq!(decide(&s), (Move::Raise, "cache full of unread prefetches"));
    }

    #[test]
    fn no_change_between_ticks_or_when_calm() {
        let (mut c, clock) = controller();
        let s = Signals {
            hit_rate: Some(0.3),
            ..calm()
        };
        clock.advance(TICK / 2);
        assert_eq!(c.tick(&s), 0.5);
        clock.advance(TICK);
        assert_eq!(c.tick(&calm()), 0.5);
        assert_eq!(c.last_move.0, Move::Hold);
    }
}
