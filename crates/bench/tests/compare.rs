//! `gossipdir bench compare` at a tiny scale: every part runs, the new record / key reaches
//! every node in every system, and bytes were counted. Assertions on what happened, not on how
//! fast.

#[test]
fn a_small_comparison_runs_every_part_and_everything_arrives() {
    let mut args = gossipdir_bench::CompareArgs::defaults();
    args.nodes = vec![5];
    args.trials = 1;
    args.interval_ms = 250;
    // With N = 5 every node must reach 4 gossipsub mesh peers: a complete graph.
    args.degree = 4;
    args.window_ms = 300;
    args.trial_deadline_secs = 20;
    args.setup_deadline_secs = 60;
    args.late_listen_ms = 300;
    args.records = vec![200];
    args.fullview_nodes = 4;
    args.churn = 0.05;
    args.churn_rounds = 3;
    let svg = std::env::temp_dir().join(format!("gossipdir-compare-test-{}", std::process::id()));
    args.svg_dir = Some(svg.clone());
    let r = gossipdir_bench::compare(&args).expect("the comparison runs");
    let tables = gossipdir_bench::compare::to_tables(&r, &args);
    eprintln!("{tables}");

    // Part 1: the full view ships the whole directory; ours sends far less, and under churn
    // every store ends identical.
    assert_eq!(r.full_view.len(), 1, "{tables}");
    let fv = &r.full_view[0];
    assert_eq!(fv.records, 200);
    assert_eq!(fv.refreshes_per_round, 10);
    assert!(fv.full_view_message_bytes > 200.0 * 100.0, "{tables}");
    assert_eq!(fv.ours.len(), 2, "{tables}");
    for o in &fv.ours {
        assert!(o.steady.received_per_node_per_round > 0.0, "{tables}");
        assert!(
            o.steady.received_per_node_per_round < fv.full_view_per_node_per_round / 100.0,
            "{tables}"
        );
        assert!(o.churn.received_per_node_per_round > 0.0, "{tables}");
        assert!(
            o.churn.received_per_node_per_round < fv.full_view_per_node_per_round,
            "{tables}"
        );
        assert!(o.rounds_to_identical_after_churn.is_some(), "{tables}");
        assert_eq!(o.steady.misbehaved + o.churn.misbehaved, 0, "{tables}");
    }

    // Parts 2 and 3: the record / key reached all 5 nodes in every system, bytes were received.
    assert_eq!(r.rows.len(), 3, "{tables}");
    for row in &r.rows {
        assert_eq!(row.nodes, 5, "{tables}");
        assert_eq!(
            row.converged, 1,
            "{} did not converge\n{tables}",
            row.system
        );
        assert!(row.latency_ms_median.is_some(), "{tables}");
    }
    let cc = &r.chitchat[0];
    assert_eq!(cc.converged, 1, "{tables}");
    assert!(cc.trials[0].bytes_in_mean > 0.0, "{tables}");
    let gd = &r.gossipdir[0];
    assert!(gd.trials[0].payload_in_mean > 0.0, "{tables}");
    let gs = &r.gossipsub[0];
    assert!(gs.trials[0].transport_in_mean > 0.0, "{tables}");
    // The late joiner: the whole directory from gossipdir, none of the earlier gossipsub
    // messages.
    let late = gd.late.as_ref().expect("a late joiner");
    assert_eq!(late["holds_all"], serde_json::json!(true), "{tables}");
    let late = gs.late.as_ref().expect("a late subscriber");
    assert_eq!(late["messages_received"], serde_json::json!(0), "{tables}");

    for f in [
        "compare-rounds.svg",
        "compare-bytes.svg",
        "compare-idle.svg",
        "compare-fullview.svg",
    ] {
        let text = std::fs::read_to_string(svg.join(f)).expect("the SVG was written");
        assert!(text.starts_with("<svg"), "{f}");
    }
    let _ = std::fs::remove_dir_all(&svg);
}
