//! Facts the rumor-model simulator must reproduce.

use gossipdir_sim::{
    Mode, Model, ParamError, Report, RumorModel, SimParams, TrialResult, rumor, run_experiment,
    run_trials,
};

fn params(nodes: u32, fanout: u32, mode: Mode) -> SimParams {
    SimParams {
        nodes,
        fanout,
        mode,
        ..SimParams::default()
    }
}

fn report(p: &SimParams) -> Report {
    run_experiment(&RumorModel, p, 2, &|_| {}).expect("valid parameters")
}

/// `None` (not converged) counts as infinitely slow.
fn as_cost(r: Option<u32>) -> u64 {
    r.map_or(u64::MAX, u64::from)
}

#[test]
fn single_node_converges_in_zero_rounds() {
    for mode in [Mode::Push, Mode::Pull, Mode::PushPull] {
        let r = report(&params(1, 2, mode));
        assert!(r.trials.iter().all(|t| t.rounds == Some(0)), "{mode}");
        assert_eq!((r.worst, r.best, r.average), (Some(0), Some(0), Some(0.0)));
        assert_eq!(r.bound, 0);
        assert_eq!(r.fanout, 0);
        assert!(r.criteria.strict && r.criteria.lenient && !r.criteria.catastrophic);
    }
}

#[test]
fn lossless_runs_always_converge() {
    for mode in [Mode::Push, Mode::Pull, Mode::PushPull] {
        for nodes in [2, 3, 10, 100, 1000] {
            for fanout in [1, 2, 3] {
                let p = SimParams {
                    trials: 10,
                    ..params(nodes, fanout, mode)
                };
                let r = report(&p);
                assert_eq!(r.converged, 10, "N={nodes} K={fanout} {mode}");
            }
        }
    }
}

#[test]
fn two_nodes_converge_in_one_round() {
    // With N=2 every call reaches the only other node, so one lossless round suffices
    // in every mode (in pull mode the uninformed node's own call does it).
    for mode in [Mode::Push, Mode::Pull, Mode::PushPull] {
        let r = report(&params(2, 1, mode));
        assert_eq!((r.worst, r.best), (Some(1), Some(1)), "{mode}");
    }
}

/// Peer choices, loss coins, unreachable picks and churn picks come from the RNG in an
/// order that does not depend on the mode or on who is informed, so on one seed push,
/// pull and push-pull see the same contacts and push-pull's informed set is a superset
/// of the other two at every round.
#[test]
fn push_pull_is_never_slower_than_push_or_pull_on_the_same_seed() {
    let conditions: [(f64, f64, f64, u32); 5] = [
        (0.0, 0.0, 0.0, 1),
        (0.2, 0.0, 0.0, 1),
        (0.0, 0.3, 0.0, 1),
        (0.1, 0.1, 0.02, 1),
        (0.0, 0.0, 0.0, 3),
    ];
    for (loss, unreachable, churn, updates) in conditions {
        for (nodes, fanout) in [(10, 1), (10, 2), (100, 1), (300, 2)] {
            let base = SimParams {
                loss,
                unreachable,
                churn,
                updates,
                trials: 15,
                seed: 7,
                ..params(nodes, fanout, Mode::PushPull)
            };
            let run = |mode| {
                run_trials(
                    &RumorModel,
                    &SimParams {
                        mode,
                        ..base.clone()
                    },
                    2,
                    &|_| {},
                )
            };
            let pp = run(Mode::PushPull);
            for other in [Mode::Push, Mode::Pull] {
                for (a, b) in pp.iter().zip(run(other)) {
                    assert_eq!(a.seed, b.seed);
                    assert!(
                        as_cost(a.rounds) <= as_cost(b.rounds),
                        "{base:?}: push-pull {:?} slower than {other} {:?}",
                        a.rounds,
                        b.rounds
                    );
                }
            }
        }
    }
}

#[test]
fn founding_experiment_n10_k2_push_pull_passes_strict() {
    let r = report(&SimParams::default());
    assert_eq!(r.trials.len(), 20);
    assert_eq!(r.bound, 4);
    assert!(r.worst.unwrap() <= 4, "{r:?}");
    assert!(r.criteria.strict && r.criteria.lenient && !r.criteria.catastrophic);
}

#[test]
fn total_loss_never_converges_and_is_catastrophic() {
    let r = report(&SimParams {
        loss: 1.0,
        max_rounds: 20,
        ..SimParams::default()
    });
    assert!(r.trials.iter().all(|t| t.rounds.is_none()));
    assert_eq!((r.worst, r.average, r.best), (None, None, None));
    assert_eq!(r.converged, 0);
    assert!(!r.criteria.strict && !r.criteria.lenient && r.criteria.catastrophic);
}

#[test]
fn loss_slows_convergence_down() {
    // Losing exchanges only removes information. The lossy run also draws loss coins,
    // so its contacts differ from the lossless run's on the same seed: compare averages.
    let lossless = report(&params(1000, 2, Mode::PushPull));
    let lossy = report(&SimParams {
        loss: 0.5,
        ..params(1000, 2, Mode::PushPull)
    });
    assert_eq!(lossy.converged, 20);
    assert!(lossy.average.unwrap() > lossless.average.unwrap());
}

#[test]
fn pull_with_fanout_one_is_slower_than_push_pull_at_moderate_n() {
    let pull = report(&params(1000, 1, Mode::Pull));
    let push_pull = report(&params(1000, 1, Mode::PushPull));
    assert!(
        pull.average.unwrap() > push_pull.average.unwrap(),
        "pull {:?} vs push-pull {:?}",
        pull.average,
        push_pull.average
    );
}

#[test]
fn push_with_fanout_one_is_near_log2n_plus_lnn() {
    // Pittel (1987): push with fanout 1 takes log₂N + ln N + O(1) rounds.
    let r = report(&params(1024, 1, Mode::Push));
    let theory = r.theory.push; // ≈ 16.93
    let avg = r.average.unwrap();
    assert!(
        (avg - theory).abs() < 3.0,
        "average {avg} vs theory {theory}"
    );
    // ... far more than the bound ⌈log₂N⌉ = 10: STRICT visibly fails for push with K = 1.
    assert!(r.worst.unwrap() > 10);
    assert!(!r.criteria.strict);
}

#[test]
fn same_seed_gives_the_same_report_whatever_the_thread_count() {
    let p = SimParams {
        loss: 0.1,
        unreachable: 0.1,
        churn: 0.01,
        updates: 2,
        ..params(500, 2, Mode::PushPull)
    };
    let one = run_experiment(&RumorModel, &p, 1, &|_| {}).unwrap();
    let two = run_experiment(&RumorModel, &p, 2, &|_| {}).unwrap();
    let again = run_experiment(&RumorModel, &p, 2, &|_| {}).unwrap();
    assert_eq!(one, two);
    assert_eq!(two, again);
    let seeds: Vec<u64> = one.trials.iter().map(|t| t.seed).collect();
    assert_eq!(seeds, (1..=20).collect::<Vec<u64>>());
}

#[test]
fn trial_t_is_the_same_run_as_a_single_trial_with_seed_plus_t() {
    let p = params(200, 2, Mode::Push);
    let all = run_trials(&RumorModel, &p, 2, &|_| {});
    for (t, trial) in all.iter().enumerate() {
        assert_eq!(rumor::simulate(&p, p.seed + t as u64), trial.rounds);
    }
}

#[test]
fn push_never_reaches_nodes_that_accept_no_inbound_exchange() {
    // unreachable = 1: every node but the origin refuses inbound exchanges. Pushes
    // always target such a node, so nothing spreads; pulls from the origin still work.
    let all_unreachable = |mode| SimParams {
        unreachable: 1.0,
        max_rounds: 64,
        ..params(10, 2, mode)
    };
    let push = report(&all_unreachable(Mode::Push));
    assert_eq!(push.converged, 0);
    for mode in [Mode::Pull, Mode::PushPull] {
        let r = report(&all_unreachable(mode));
        assert_eq!(r.converged, 20, "{mode}");
        // Only a direct call to the origin informs a node, so it is slower than
        // the unrestricted run.
        assert!(r.average.unwrap() > report(&params(10, 2, mode)).average.unwrap());
    }
}

#[test]
fn partly_unreachable_network_still_converges_with_push_pull() {
    let r = report(&SimParams {
        unreachable: 0.5,
        ..params(1000, 2, Mode::PushPull)
    });
    assert_eq!(r.converged, 20);
}

#[test]
fn light_churn_slows_but_does_not_prevent_convergence() {
    let p = params(1000, 2, Mode::PushPull);
    let churned = report(&SimParams {
        churn: 0.01,
        ..p.clone()
    });
    assert_eq!(churned.converged, 20);
    assert!(churned.average.unwrap() >= report(&p).average.unwrap());
}

#[test]
fn heavy_churn_keeps_fresh_nodes_uninformed() {
    // Half the nodes are fresh each round; all of them would have to be informed in
    // their first round for the run to converge.
    let r = report(&SimParams {
        churn: 0.5,
        max_rounds: 30,
        ..params(1000, 2, Mode::PushPull)
    });
    assert_eq!(r.converged, 0);
}

#[test]
fn origins_never_churn_out_so_a_tiny_network_with_churn_converges() {
    // N=2, churn 0.9: the only non-origin node is replaced every round, but the origin
    // stays and one lossless exchange informs the fresh node.
    let r = report(&SimParams {
        churn: 0.9,
        ..params(2, 1, Mode::PushPull)
    });
    assert_eq!((r.worst, r.best), (Some(1), Some(1)));
}

#[test]
fn more_updates_never_converge_sooner_than_one_on_the_same_seed() {
    // Without loss, unreachable nodes or churn the RNG use does not depend on the
    // number of updates, and record 0 spreads exactly as it does alone.
    for (nodes, updates) in [(10, 3), (100, 8), (100, 9), (200, 70), (50, 50)] {
        let one = run_trials(&RumorModel, &params(nodes, 2, Mode::PushPull), 2, &|_| {});
        let many = run_trials(
            &RumorModel,
            &SimParams {
                updates,
                ..params(nodes, 2, Mode::PushPull)
            },
            2,
            &|_| {},
        );
        for (a, b) in one.iter().zip(&many) {
            assert!(b.rounds.is_some(), "N={nodes} U={updates}");
            assert!(
                as_cost(a.rounds) <= as_cost(b.rounds),
                "N={nodes} U={updates}"
            );
        }
    }
}

#[test]
fn rumor_model_rejects_adversaries_and_bad_parameters() {
    let p = SimParams {
        adversaries: 0.1,
        ..SimParams::default()
    };
    assert!(matches!(
        RumorModel.check(&p),
        Err(ParamError::Unsupported { .. })
    ));
    assert!(run_experiment(&RumorModel, &p, 1, &|_| {}).is_err());
    let bad = SimParams {
        updates: 11,
        ..SimParams::default()
    };
    assert!(run_experiment(&RumorModel, &bad, 1, &|_| {}).is_err());
}

#[test]
fn report_json_has_the_documented_fields() {
    let r = report(&SimParams {
        loss: 0.9,
        max_rounds: 3,
        trials: 5,
        ..SimParams::default()
    });
    let v = serde_json::to_value(&r).unwrap();
    for key in [
        "experiment",
        "nodes",
        "fanout",
        "mode",
        "model",
        "bound",
        "trials",
        "worst",
        "average",
        "best",
        "criteria",
        "loss",
        "unreachable",
        "churn",
        "updates",
        "max_rounds",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["experiment"], "bet15");
    assert_eq!(v["model"], "rumor");
    assert_eq!(v["mode"], "push-pull");
    assert_eq!(v["bound"], 4);
    assert!(v.get("engine").is_none(), "engine is skipped when absent");
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 5);
    for t in trials {
        let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["rounds", "seed"].iter().collect::<Vec<_>>());
    }
    // With 90% loss and 3 rounds some trials fail: their rounds are null.
    assert!(trials.iter().any(|t| t["rounds"].is_null()));
    assert_eq!(v["criteria"]["catastrophic"], true);
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn tables_show_the_founding_layout() {
    let r = report(&SimParams::default());
    let table = r.to_table();
    assert!(
        table.starts_with(
            "Bet 15 — gossip directory, N=10, K=2, push-pull, rumor model, 20 trials\n"
        )
    );
    for row in [
        "| Metric ",
        "| Worst-case convergence | ",
        "| Average convergence    | ",
        "| Best-case convergence  | ",
        "| Theoretical bound      | 4 rounds",
        "STRICT: PASS  LENIENT: PASS  CATASTROPHIC: no",
    ] {
        assert!(table.contains(row), "missing {row:?} in\n{table}");
    }
    let sweep =
        gossipdir_sim::report::sweep_table(&[r.clone(), report(&params(100, 2, Mode::PushPull))]);
    assert_eq!(sweep.lines().count(), 5, "{sweep}");
}

#[test]
fn plot_writes_an_svg() {
    let reports: Vec<Report> = [10, 100, 1000]
        .map(|n| report(&params(n, 2, Mode::PushPull)))
        .into();
    let path = std::env::temp_dir().join(format!("gossipdir-sim-plot-{}.svg", std::process::id()));
    gossipdir_sim::plot::plot_svg(&path, &reports).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"));
    assert!(svg.contains("log₃N"));
    // A single report plots too.
    gossipdir_sim::plot::plot_svg(&path, &reports[..1]).unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_custom_model_plugs_into_the_runner() {
    struct Constant;
    impl Model for Constant {
        fn name(&self) -> &'static str {
            "constant"
        }
        fn run_trial(&self, _: &SimParams, seed: u64) -> TrialResult {
            TrialResult {
                seed,
                rounds: Some(2),
                extra: Some(serde_json::json!({"bytes_per_node_per_round": 100})),
            }
        }
        fn report_extra(&self, _: &SimParams, _: &[TrialResult]) -> Option<serde_json::Value> {
            Some(serde_json::json!({"bytes_per_node_per_round": 100.0}))
        }
    }
    let r = run_experiment(&Constant, &SimParams::default(), 2, &|_| {}).unwrap();
    assert_eq!(r.model, "constant");
    assert_eq!(r.average, Some(2.0));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["engine"]["bytes_per_node_per_round"], 100.0);
    assert_eq!(v["trials"][0]["extra"]["bytes_per_node_per_round"], 100);
}
