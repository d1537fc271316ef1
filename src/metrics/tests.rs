use super::*;

/// A retired worker's block goes to the next worker, so the blocks
/// never outnumber the largest pool and no count is lost.
#[test]
fn blocks_are_reused_and_summed() {
    let metrics = Metrics::new();
    metrics.attach(
        vec![ServiceLabels {
            name: "upper".to_owned(),
            closed_by_service: "line_too_long",
        }],
        Weak::<NoGauges>::new(),
    );
    let tally = Tally {
        requests: 2,
        received: 10,
        sent: 12,
        ..Tally::default()
    };
    let first = metrics.lease();
    first.block().add(0, &tally);
    drop(first);
    let second = metrics.lease();
    let third = metrics.lease();
    second.block().add(0, &tally);
    third.block().add(0, &tally);
    metrics.off_path().add(0, &tally);
    assert_eq!(lock(&metrics.blocks).all.len(), 2);
    let snapshot = metrics.snapshot();
    let upper = &snapshot.services[0];
    assert_eq!((upper.requests, upper.received, upper.sent), (8, 40, 48));
}

#[test]
fn each_block_has_its_own_cache_lines() {
    assert_eq!(std::mem::align_of::<Block>(), 128);
    assert_eq!(std::mem::size_of::<Block>() % 128, 0);
}

struct NoGauges;

impl Gauges for NoGauges {
    fn workers(&self) -> usize {
        0
    }

    fn buffers(&self) -> Buffers {
        Buffers::default()
    }
}
