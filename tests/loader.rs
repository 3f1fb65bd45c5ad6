//! DataLoader: batching, drop_last, seeded per-epoch shuffling, prefetch workers.

use fulmen::data::{DataLoader, InMemoryDataset};

fn loader(n: u32, batch: usize) -> DataLoader<u32> {
    DataLoader::new(InMemoryDataset::new((0..n).collect()), batch)
}

#[test]
fn keeps_the_last_partial_batch_unless_drop_last() {
    let l = loader(10, 4);
    assert_eq!(l.len(), 3);
    let sizes: Vec<usize> = l.epoch(0).map(|b| b.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    let l = l.drop_last(true);
    assert_eq!(l.len(), 2);
    let sizes: Vec<usize> = l.epoch(0).map(|b| b.len()).collect();
    assert_eq!(sizes, [4, 4]);
}

#[test]
fn unshuffled_order_is_the_dataset_order() {
    let flat: Vec<u32> = loader(7, 3).epoch(5).flatten().collect();
    assert_eq!(flat, (0..7).collect::<Vec<_>>());
}

#[test]
fn shuffle_is_a_new_permutation_each_epoch_and_reproducible_by_seed() {
    let l = loader(50, 8).shuffle(true).seed(11);
    let e0: Vec<u32> = l.epoch(0).flatten().collect();
    let e1: Vec<u32> = l.epoch(1).flatten().collect();
    assert_ne!(e0, e1, "each epoch gets its own order");
    for e in [&e0, &e1] {
        let mut sorted = e.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..50).collect::<Vec<_>>(),
            "a permutation: every sample once"
        );
    }
    let again = loader(50, 8).shuffle(true).seed(11);
    assert_eq!(again.epoch(1).flatten().collect::<Vec<_>>(), e1);
    let other = loader(50, 8).shuffle(true).seed(12);
    assert_ne!(other.epoch(0).flatten().collect::<Vec<_>>(), e0);
}

#[test]
fn workers_yield_the_same_batches_in_the_same_order() {
    let inline = loader(103, 7).shuffle(true).seed(5);
    let threaded = inline.clone().num_workers(3);
    for epoch in 0..3 {
        let a: Vec<Vec<u32>> = inline.epoch(epoch).collect();
        let b: Vec<Vec<u32>> = threaded.epoch(epoch).collect();
        assert_eq!(a, b);
    }
    // Stopping early (max_steps) drops the iterator while workers still run: no hang.
    let first: Vec<Vec<u32>> = threaded.epoch(0).take(2).collect();
    assert_eq!(first.len(), 2);
}

#[test]
fn unusable_settings_are_refused_by_validate() {
    assert!(loader(5, 0)
        .validate("train_dataloader")
        .unwrap_err()
        .to_string()
        .contains("batch_size"));
    assert!(loader(0, 4)
        .validate("val_dataloader")
        .unwrap_err()
        .to_string()
        .contains("empty"));
    let err = loader(3, 4)
        .drop_last(true)
        .validate("train_dataloader")
        .unwrap_err();
    assert!(err.to_string().contains("leaves no batch"), "{err}");
}

#[test]
fn the_distributed_sampler_splits_each_epoch_padded_to_equal_shares() {
    let base = loader(10, 2).shuffle(true).seed(3);
    let full = base.order(1);
    let shares: Vec<Vec<usize>> = (0..3)
        .map(|r| base.clone().distributed(r, 3).order(1))
        .collect();
    // 10 samples on 3 ranks: padded to 12 with the order's first two, every 3rd from the rank.
    let padded: Vec<usize> = full.iter().chain(&full[..2]).copied().collect();
    for (r, share) in shares.iter().enumerate() {
        let want: Vec<usize> = padded.iter().skip(r).step_by(3).copied().collect();
        assert_eq!(share, &want, "rank {r}");
        assert_eq!(
            base.clone().distributed(r, 3).len(),
            2,
            "4 samples in batches of 2"
        );
    }
    let mut seen: Vec<usize> = shares.concat();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        (0..10).collect::<Vec<_>>(),
        "every sample once, but for the padding"
    );
    assert_ne!(
        base.clone().distributed(0, 3).order(2),
        shares[0],
        "reshuffled per epoch"
    );
    assert_eq!(
        base.clone().distributed(0, 1).order(1),
        full,
        "one rank: the whole order"
    );
}

#[test]
fn the_unrepeated_sampler_gives_every_sample_to_one_rank_once() {
    // 11 samples on 4 ranks: shares of 3, 3, 3 and 2, every 4th of one order from the rank.
    let base = loader(11, 2).shuffle(true).seed(5);
    let full = base.order(0);
    let shares: Vec<Vec<usize>> = (0..4)
        .map(|r| base.clone().distributed_unrepeated(r, 4).order(0))
        .collect();
    for (r, share) in shares.iter().enumerate() {
        let want: Vec<usize> = full.iter().skip(r).step_by(4).copied().collect();
        assert_eq!(share, &want, "rank {r}");
    }
    let mut seen = shares.concat();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..11).collect::<Vec<_>>(),
        "each sample exactly once"
    );
    let lens: Vec<(usize, usize)> = (0..4)
        .map(|r| {
            let l = base.clone().distributed_unrepeated(r, 4);
            (l.len(), l.len_largest_share())
        })
        .collect();
    // Batches of 2: 3 samples make 2 batches, 2 make 1; every rank decides by rank 0's 2.
    assert_eq!(lens, [(2, 2), (2, 2), (2, 2), (1, 2)]);
    // More ranks than samples: padded instead, so that no rank is left without a batch (a
    // rank with none would skip what the others synchronize).
    let few: Vec<Vec<usize>> = (0..4)
        .map(|r| loader(2, 2).distributed_unrepeated(r, 4).order(0))
        .collect();
    assert_eq!(few, [[0], [1], [0], [1]]);
}
