//! Relay destinations: an account's list, replaced as a whole.

use strongroom_store::{RelayDestinationRecord, RelayStore, Store};

use crate::{T0, account, store_test, writes};

fn dest(account: &str, host: &str, port: i64, prefix: &str) -> RelayDestinationRecord {
    RelayDestinationRecord {
        account_id: account.to_owned(),
        host: host.to_owned(),
        port,
        path_prefix: prefix.to_owned(),
        ca_cert_pem: None,
        test_only: false,
        created_ms: T0,
    }
}

store_test!(relay_destinations_are_replaced_whole);
async fn relay_destinations_are_replaced_whole(store: Store) {
    let a = account(&store).await;
    let b = account(&store).await;
    assert!(store.relay_destinations(&a).await.unwrap().is_empty());

    let first = vec![
        dest(&a, "api.processor.example", 443, "/v1/"),
        RelayDestinationRecord {
            ca_cert_pem: Some(
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ),
            test_only: true,
            ..dest(&a, "127.0.0.1", 8443, "/")
        },
    ];
    writes(&store)
        .set_relay_destinations(&a, &first)
        .await
        .unwrap();
    writes(&store)
        .set_relay_destinations(&b, &[dest(&b, "other.example", 443, "/")])
        .await
        .unwrap();
    // Order is kept, every field round-trips.
    assert_eq!(store.relay_destinations(&a).await.unwrap(), first);

    // A new list replaces the old one entirely; the other account's is untouched.
    let second = vec![
        RelayDestinationRecord {
            created_ms: T0 + 5,
            ..dest(&a, "zz.example", 9443, "/pay")
        },
        RelayDestinationRecord {
            created_ms: T0 + 5,
            ..dest(&a, "aa.example", 443, "/")
        },
    ];
    writes(&store)
        .set_relay_destinations(&a, &second)
        .await
        .unwrap();
    assert_eq!(store.relay_destinations(&a).await.unwrap(), second);
    assert_eq!(store.relay_destinations(&b).await.unwrap().len(), 1);

    // Empty clears.
    writes(&store)
        .set_relay_destinations(&a, &[])
        .await
        .unwrap();
    assert!(store.relay_destinations(&a).await.unwrap().is_empty());

    // An unknown account cannot get destinations (foreign key), and a failed write
    // leaves nothing behind.
    let ghost = "acct_00000000000000000000000000000000";
    assert!(
        writes(&store)
            .set_relay_destinations(ghost, &[dest(ghost, "x.example", 443, "/")])
            .await
            .is_err()
    );
    assert!(store.relay_destinations(ghost).await.unwrap().is_empty());
}
