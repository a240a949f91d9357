//! Deterministic simulation of the delivery guarantees (docs/testing.md, "Simulation").
//!
//! Each seed draws a cluster (instances, rooms, clients, publishers) and a fault plan
//! (Pub/Sub loss, delay and reordering, Redis restarts empty or from an older snapshot,
//! instance kills, room actor panics, lost acks, clients leaving and coming back) and
//! runs it on a simulated clock, checking the guarantees of SPEC.md on every frame.
//! The same seed always replays the same run.
//!
//! - `cargo test --test sim`: a bounded number of seeds (a few seconds).
//! - `SIM_SEED=N cargo test --test sim`: that seed only, with its trace on failure.
//! - `SIM_SEEDS=100000 cargo test --release --test sim`: a soak; `SIM_FIRST` moves the
//!   starting seed.

mod redis;
mod sched;
mod world;

use world::World;

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")),
    )
}

fn run(seed: u64) -> Result<world::Stats, String> {
    let mut world = World::new(seed);
    world.run().map_err(|violation| {
        format!(
            "seed {seed} broke a guarantee: {violation}shape: {:?}\nreproduce: SIM_SEED={seed} cargo test --test sim",
            world.shape()
        )
    })
}

#[test]
fn guarantees_hold_under_seeded_faults() {
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST").unwrap_or(0);
            (first..first + env("SIM_SEEDS").unwrap_or(1_000)).collect()
        }
    };
    let mut total = world::Stats::default();
    for &seed in &seeds {
        match run(seed) {
            Ok(stats) => total.add(&stats),
            Err(report) => panic!("{report}"),
        }
    }
    println!("{} seeds: {total:?}", seeds.len());
    assert!(total.delivered > 0, "the simulation delivered nothing");
}

#[test]
fn a_seed_replays_identically() {
    let a = run(7).expect("seed 7");
    let b = run(7).expect("seed 7");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
