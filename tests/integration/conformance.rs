//! One conformance suite that every broker implementation passes: the embedded one and
//! the Redis one (against a real redis-server).

use crate::support::redis::RedisServer;
use roomcast::broker::{
    Broker, BrokerEvent, EventReceiver, HistoryQuery, HistorySettings, KeyRetention, MemoryBroker,
    PublishRequest, RedisBroker, RedisSettings,
};
use roomcast::config::Config;
use roomcast::protocol::RoomName;
use serde_json::json;
use std::time::Duration;

fn settings() -> HistorySettings {
    HistorySettings {
        size: 3,
        ttl_ms: 60_000,
        meta_ttl_ms: 120_000,
        idempotency_window_ms: 60_000,
        idempotency_max_keys: 100,
    }
}

fn request(n: u64, key: Option<&str>) -> PublishRequest {
    PublishRequest {
        data: json!({ "n": n }),
        idempotency_key: key.map(str::to_owned),
        trace: None,
        key_retention: Default::default(),
    }
}

async fn next_publication_seq(events: &mut EventReceiver) -> u64 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("channel open")
        {
            BrokerEvent::Publication(p) => return p.seq,
            BrokerEvent::Resync(_) => continue,
        }
    }
}

async fn conformance(broker: &dyn Broker, events: &mut EventReceiver) {
    let room = RoomName::new_unchecked(&*format!("conf-{}", rand::random::<u32>()));

    // A room read before any publish already has an epoch, at seq 0.
    let empty = broker
        .history(&room, HistoryQuery::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(empty.top.seq, 0);
    assert_eq!(empty.first_seq, None);
    assert!(empty.publications.is_empty());

    // Sequencing is gap-free and events follow in order, only while subscribed.
    broker.subscribe(&room).await.unwrap();
    broker.subscribe(&room).await.unwrap(); // idempotent
    for n in 1..=5 {
        let ack = broker.publish(&room, request(n, None)).await.unwrap();
        assert_eq!(ack.position.seq, n);
        assert_eq!(ack.position.epoch, empty.top.epoch);
        assert!(!ack.duplicate);
        assert_eq!(next_publication_seq(events).await, n);
    }

    // The replay buffer is bounded by count (3) and reads are consistent with the top.
    let page = broker
        .history(&room, HistoryQuery::After { seq: 0, limit: 10 })
        .await
        .unwrap();
    assert_eq!(page.top.seq, 5);
    assert_eq!(page.first_seq, Some(3));
    let seqs: Vec<u64> = page.publications.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(page.publications[0].data, json!({"n": 3}));
    let latest = broker
        .history(&room, HistoryQuery::Latest { limit: 2 })
        .await
        .unwrap();
    assert_eq!(
        latest
            .publications
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    let after = broker
        .history(&room, HistoryQuery::After { seq: 3, limit: 1 })
        .await
        .unwrap();
    assert_eq!(
        after.publications.iter().map(|p| p.seq).collect::<Vec<_>>(),
        vec![4]
    );

    // A retried key gets the original ack and no second event.
    let first = broker.publish(&room, request(6, Some("k"))).await.unwrap();
    assert_eq!(next_publication_seq(events).await, 6);
    let retry = broker.publish(&room, request(6, Some("k"))).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.position, first.position);

    // After unsubscribing, no more events for the room.
    broker.unsubscribe(&room).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Some(event) = events.try_recv() {
        assert!(
            matches!(event, BrokerEvent::Resync(_)),
            "unexpected {event:?}"
        );
    }
    broker.publish(&room, request(7, None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !matches!(events.try_recv(), Some(BrokerEvent::Publication(_))),
        "no events after unsubscribe"
    );

    // A reset with a stale epoch does nothing; with the current one it starts anew.
    let unchanged = broker
        .reset_epoch(&room, &roomcast::stream::Epoch::new("not-it"))
        .await
        .unwrap();
    assert_eq!(
        (unchanged.epoch.clone(), unchanged.seq),
        (empty.top.epoch.clone(), 7)
    );
    let fresh = broker.reset_epoch(&room, &empty.top.epoch).await.unwrap();
    assert_ne!(fresh.epoch, empty.top.epoch);
    assert_eq!(fresh.seq, 0);
    let ack = broker.publish(&room, request(8, None)).await.unwrap();
    assert_eq!((ack.position.epoch, ack.position.seq), (fresh.epoch, 1));
}

/// The embedded broker remembers at most `idempotency_max_keys` keys per room: past it,
/// the key closest to expiry (the oldest, for keys of one window) is forgotten first.
/// Another room's keys are not affected. (Redis keeps each key for its lifetime: see
/// `redis_keeps_each_key_for_its_lifetime`.)
async fn dedupe_is_bounded_per_room(broker: &dyn Broker) {
    let room = RoomName::new_unchecked("conformance:dedupe");
    let other = RoomName::new_unchecked("conformance:other");
    broker
        .publish(&other, request(0, Some("kept")))
        .await
        .unwrap();
    let max = settings().idempotency_max_keys;
    for n in 0..=max {
        let key = format!("key-{n}");
        let ack = broker
            .publish(&room, request(n as u64, Some(&key)))
            .await
            .unwrap();
        assert!(!ack.duplicate);
    }
    let newest = broker
        .publish(&room, request(0, Some(&format!("key-{max}"))))
        .await
        .unwrap();
    assert!(newest.duplicate, "the newest key is remembered");
    let oldest = broker
        .publish(&room, request(0, Some("key-0")))
        .await
        .unwrap();
    assert!(
        !oldest.duplicate,
        "the oldest key was forgotten at the bound"
    );
    let elsewhere = broker
        .publish(&other, request(0, Some("kept")))
        .await
        .unwrap();
    assert!(elsewhere.duplicate, "another room keeps its keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_broker_conforms() {
    let (tx, mut rx) = roomcast::broker::event_channel(1 << 16);
    let broker = MemoryBroker::new(settings(), tx);
    conformance(&broker, &mut rx).await;
    dedupe_is_bounded_per_room(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_broker_conforms() {
    let redis = RedisServer::start().await;
    let (tx, mut rx) = roomcast::broker::event_channel(1 << 16);
    let config = Config::defaults();
    let broker = RedisBroker::start(
        &redis.url(),
        "conformance",
        settings(),
        RedisSettings::from_config(&config.redis),
        tx,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !broker.status().ready {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {:?}",
            broker.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conformance(&broker, &mut rx).await;
}

/// The outbox relay's keys outlive the clients' dedupe window on Redis: a relay back
/// from a crash long after its publish still gets the original ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_epoch_keys_past_the_dedupe_window() {
    let redis = RedisServer::start().await;
    let (tx, _rx) = roomcast::broker::event_channel(1 << 16);
    let short_window = HistorySettings {
        idempotency_window_ms: 300,
        ..settings()
    };
    let broker = RedisBroker::start(
        &redis.url(),
        "retention",
        short_window,
        RedisSettings::from_config(&Config::defaults().redis),
        tx,
    )
    .unwrap();
    let room = RoomName::new_unchecked("retention");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let publish = |key: &'static str, retention: KeyRetention| PublishRequest {
        key_retention: retention,
        ..request(1, Some(key))
    };
    let (client, outbox) = loop {
        let client = broker
            .publish(&room, publish("client", KeyRetention::Window))
            .await;
        let outbox = broker
            .publish(&room, publish("outbox", KeyRetention::Epoch))
            .await;
        match (client, outbox) {
            (Ok(client), Ok(outbox)) => break (client, outbox),
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Redis never answered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let client_again = broker
        .publish(&room, publish("client", KeyRetention::Window))
        .await
        .unwrap();
    assert!(
        !client_again.duplicate,
        "past the window, a client key is new"
    );
    assert_ne!(client_again.position, client.position);
    let outbox_again = broker
        .publish(&room, publish("outbox", KeyRetention::Epoch))
        .await
        .unwrap();
    assert!(outbox_again.duplicate, "an epoch key is still remembered");
    assert_eq!(outbox_again.position, outbox.position);
}

/// Redis keeps each idempotency key as a key of its own with the window as its TTL, so
/// a room remembers every key of the window however many there are (more than the
/// embedded broker's `idempotency_max_keys` here), and forgets each when its window
/// ends; and a key recorded by an earlier build, in the room's hash of keys, is still
/// found (a retry reaching this build during a rolling upgrade), until its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_each_key_for_its_lifetime() {
    let redis = RedisServer::start().await;
    let history = HistorySettings {
        idempotency_window_ms: 3_000,
        ..settings()
    };
    let prefix = Config::defaults().redis.key_prefix;
    let (broker, _events) = ready_redis_broker(&redis, "keys", history.clone()).await;
    let room = RoomName::new_unchecked("keys");

    let many = 2 * history.idempotency_max_keys as u64;
    let mut first = None;
    for n in 1..=many {
        let ack = broker
            .publish(&room, request(n, Some(&format!("client:u:{n}"))))
            .await
            .unwrap();
        assert!(!ack.duplicate && ack.position.seq == n);
        first.get_or_insert(ack.position);
    }
    let again = broker
        .publish(&room, request(1, Some("client:u:1")))
        .await
        .unwrap();
    assert!(again.duplicate, "the first of {many} keys is remembered");
    assert_eq!(Some(again.position), first);
    let record = format!("{prefix}:{{keys}}:idem:client:u:1");
    let ttl = pttl(&redis, &record).await;
    assert!(
        ttl > 0 && ttl <= 3_000,
        "the key's record lives its window ({ttl} ms)"
    );

    // A record of an earlier build: epoch, seq, time and its expiry, in the room's hash.
    let epoch = first.as_ref().unwrap().epoch.as_str().to_owned();
    let legacy = format!("{prefix}:{{keys}}:idem");
    let far = "99999999999999";
    let record = format!("{epoch} 7 1700000000000 {far}");
    let expired = format!("{epoch} 8 1700000000000 1700000000001");
    for (field, value) in [("client:old:kept", &record), ("client:old:gone", &expired)] {
        assert_eq!(
            redis.cli(&["HSET", &legacy, field, value]).await.as_deref(),
            Some("1")
        );
    }
    let old = broker
        .publish(&room, request(0, Some("client:old:kept")))
        .await
        .unwrap();
    assert!(old.duplicate, "a key an earlier build recorded is found");
    assert_eq!(
        (old.position.epoch.as_str(), old.position.seq),
        (&*epoch, 7)
    );
    assert_eq!(old.time_ms, 1_700_000_000_000);
    let gone = broker
        .publish(&room, request(0, Some("client:old:gone")))
        .await
        .unwrap();
    assert!(
        !gone.duplicate,
        "an expired record of an earlier build is not"
    );
    assert_eq!(gone.position.seq, many + 1);

    // Past the window a key is new again.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let later = broker
        .publish(&room, request(1, Some("client:u:1")))
        .await
        .unwrap();
    assert!(!later.duplicate, "past its window the key is new");
    assert_eq!(later.position.seq, many + 2);
}

/// The outbox relay's keys are also written where earlier builds look for them (the
/// room's hash, "epoch seq time expires", the hash living past the key), because every
/// instance relays the same rows and during a rolling upgrade an instance of an earlier
/// build may publish a row that a new one already published; clients' keys are not. And
/// a key lifetime of 0 remembers nothing, without failing the publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_writes_outbox_keys_where_earlier_builds_look_too() {
    let redis = RedisServer::start().await;
    let prefix = Config::defaults().redis.key_prefix;
    let (broker, _events) = ready_redis_broker(&redis, "legacy", settings()).await;
    let room = RoomName::new_unchecked("legacy");
    let legacy = format!("{prefix}:{{legacy}}:idem");
    let outbox = PublishRequest {
        key_retention: KeyRetention::Epoch,
        ..request(1, Some("outbox:42"))
    };
    let ack = broker.publish(&room, outbox).await.unwrap();
    broker
        .publish(&room, request(2, Some("client:u:1")))
        .await
        .unwrap();
    let written = redis.cli(&["HGET", &legacy, "outbox:42"]).await.unwrap();
    let fields: Vec<&str> = written.split(' ').collect();
    assert_eq!(fields.len(), 4, "epoch seq time expires: {written:?}");
    assert_eq!(fields[0], ack.position.epoch.as_str());
    assert_eq!(fields[1], "1");
    assert_eq!(fields[2], ack.time_ms.to_string());
    let expires: u64 = fields[3].parse().unwrap();
    let meta_ttl = settings().meta_ttl_ms;
    assert_eq!(
        expires,
        ack.time_ms + meta_ttl,
        "expires after the epoch's lifetime"
    );
    let hash_expires: u64 = redis
        .cli(&["HGET", &legacy, "#expires"])
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(hash_expires >= expires, "the hash outlives the key");
    let ttl = pttl(&redis, &legacy).await;
    assert!(
        ttl as u64 > meta_ttl - 5_000,
        "the hash has its expiry ({ttl} ms)"
    );
    assert_eq!(
        redis
            .cli(&["HEXISTS", &legacy, "client:u:1"])
            .await
            .as_deref(),
        Some("0"),
        "a client's key is not written there"
    );

    let none = HistorySettings {
        idempotency_window_ms: 0,
        ..settings()
    };
    let (forgetful, _more) = ready_redis_broker(&redis, "legacy-0", none).await;
    let first = forgetful
        .publish(&room, request(3, Some("client:u:2")))
        .await
        .expect("a lifetime of 0 does not fail the publish");
    let again = forgetful
        .publish(&room, request(3, Some("client:u:2")))
        .await
        .unwrap();
    assert!(!again.duplicate && again.position.seq == first.position.seq + 1);
}

/// The replay buffer keeps within its bounds at every publish: `XADD … MAXLEN ~` trims
/// by whole stream nodes (`history.size` plus at most a node), reads never reach past
/// `history.size`, and entries past the age bound are dropped by a later publish even
/// though the check reads the oldest entries only when the meta hash's `aged` time says
/// some may be due (see publish.lua).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bounds_hold_at_every_publish() {
    let redis = RedisServer::start().await;
    let history = HistorySettings {
        size: 100,
        ttl_ms: 1_500,
        ..settings()
    };
    let prefix = Config::defaults().redis.key_prefix;
    let (broker, _events) = ready_redis_broker(&redis, "bounds", history.clone()).await;
    let room = RoomName::new_unchecked("bounds");
    let log = format!("{prefix}:{{bounds}}:log");
    let meta = format!("{prefix}:{{bounds}}:meta");
    let length = async || -> usize {
        let text = redis.cli(&["XLEN", &log]).await.expect("redis-cli ran");
        text.parse().expect("a length")
    };

    // 32 publishes: the 16th and 32nd read the oldest entries, find none past the age
    // bound and record the oldest's time.
    for n in 1..=32u64 {
        broker.publish(&room, request(n, None)).await.unwrap();
    }
    assert_eq!(length().await, 32);
    let aged = redis.cli(&["HGET", &meta, "aged"]).await.unwrap();
    assert!(
        aged.parse::<u64>().is_ok(),
        "the oldest entry's time: {aged:?}"
    );

    // Once those are past the age bound, every 16th publish drops 16 of them. (The
    // stream itself would expire at about the same time: keep it, this is about trims.)
    assert_eq!(redis.cli(&["PERSIST", &log]).await.as_deref(), Some("1"));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    for n in 33..=48u64 {
        broker.publish(&room, request(n, None)).await.unwrap();
    }
    assert_eq!(
        length().await,
        48 - 16,
        "publish 48 dropped 16 aged entries"
    );
    for n in 49..=64u64 {
        broker.publish(&room, request(n, None)).await.unwrap();
    }
    assert_eq!(length().await, 64 - 32, "publish 64 dropped the other 16");
    let page = broker
        .history(&room, HistoryQuery::After { seq: 0, limit: 100 })
        .await
        .unwrap();
    assert_eq!(page.first_seq, Some(33));

    // The count, in a room whose entries do not age meanwhile: MAXLEN trims whole
    // stream nodes, never below history.size.
    let lasting = HistorySettings {
        ttl_ms: 600_000,
        ..history
    };
    let (broker, _more) = ready_redis_broker(&redis, "bounds-count", lasting.clone()).await;
    let room = RoomName::new_unchecked("bounds-count");
    let log = format!("{prefix}:{{bounds-count}}:log");
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let size = lasting.size;
    for n in 1..=(4 * size) {
        broker
            .publish(&room, request(n as u64, None))
            .await
            .unwrap();
        let entries: usize = redis::cmd("XLEN")
            .arg(&log)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            entries >= size.min(n) && entries <= size + 100,
            "{entries} entries after publish {n}"
        );
    }

    // Reads stop at history.size although the stream may hold more.
    let page = broker
        .history(&room, HistoryQuery::Latest { limit: 500 })
        .await
        .unwrap();
    assert_eq!(page.publications.len(), size);
    assert_eq!(
        page.publications.last().map(|p| p.seq),
        Some(4 * size as u64)
    );
}

/// A Redis broker on `redis` with `history`, once it reports ready, and its events.
async fn ready_redis_broker(
    redis: &RedisServer,
    node: &str,
    history: HistorySettings,
) -> (RedisBroker, EventReceiver) {
    let (tx, rx) = roomcast::broker::event_channel(1 << 16);
    let broker = RedisBroker::start(
        &redis.url(),
        node,
        history,
        RedisSettings::from_config(&Config::defaults().redis),
        tx,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !broker.status().ready {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (broker, rx)
}

/// The key's time to live in ms (PTTL).
async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let text = redis.cli(&["PTTL", key]).await.expect("redis-cli ran");
    text.parse().expect("a PTTL")
}

/// Publishes once to the room `renew` and checks the expiries of its stream and meta
/// hash: at least their lifetime after the publish (less the time since it was sent) and
/// at most the lifetime plus an eighth of the stream's lifetime.
async fn publish_and_check_expiries(
    redis: &RedisServer,
    broker: &RedisBroker,
    history: &HistorySettings,
    key: Option<&str>,
    what: &str,
) {
    let prefix = Config::defaults().redis.key_prefix;
    let room = RoomName::new_unchecked("renew");
    let sent = std::time::Instant::now();
    broker.publish(&room, request(1, key)).await.unwrap();
    let log_ttl = pttl(redis, &format!("{prefix}:{{renew}}:log")).await;
    let meta_ttl = pttl(redis, &format!("{prefix}:{{renew}}:meta")).await;
    // Redis's clock and ours, each truncated to milliseconds: 2 ms of slack.
    let since = i64::try_from(sent.elapsed().as_millis()).unwrap() + 2;
    let eighth = i64::try_from(history.ttl_ms.div_ceil(8)).unwrap();
    for (ttl, lifetime, name) in [
        (log_ttl, history.ttl_ms, "stream"),
        (meta_ttl, history.meta_ttl_ms, "meta hash"),
    ] {
        let lifetime = i64::try_from(lifetime).unwrap();
        assert!(
            ttl >= lifetime - since && ttl <= lifetime + eighth,
            "{what}: the {name} expires in {ttl} ms (lifetime {lifetime}, {since} ms after the publish)"
        );
    }
}

/// The replay stream and the meta hash are not given their expiry at every publish but
/// when it is due (see publish.lua): after any publish each still expires at least its
/// lifetime after it and at most an eighth of the stream's lifetime later, also after
/// an epoch reset, after the stream was deleted behind the function's back, and after
/// the lifetimes were shortened or lengthened (another configuration on the same Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_renews_the_stream_and_meta_expiry_when_due() {
    let redis = RedisServer::start().await;
    // Long enough that no renewal falls due between the first publishes and the check
    // that an ordinary publish leaves the expiry alone (an eighth: 75 s).
    let long = HistorySettings {
        ttl_ms: 600_000,
        meta_ttl_ms: 1_200_000,
        ..settings()
    };
    let short = HistorySettings {
        ttl_ms: 4_000,
        meta_ttl_ms: 8_000,
        ..settings()
    };
    let (broker, _events) = ready_redis_broker(&redis, "renew-long", long.clone()).await;
    let (shortened, _more) = ready_redis_broker(&redis, "renew-short", short.clone()).await;
    let prefix = Config::defaults().redis.key_prefix;
    let room = RoomName::new_unchecked("renew");
    let log = format!("{prefix}:{{renew}}:log");

    for n in 0..20 {
        let key = format!("client:renew-{n}");
        let key = (n % 2 == 0).then_some(key.as_str());
        publish_and_check_expiries(&redis, &broker, &long, key, "a publish").await;
    }

    // Ordinary publishes leave an expiry alone that is not due: one set by hand far
    // out stays (an expiry set again at every publish would not).
    assert_eq!(
        redis.cli(&["PEXPIRE", &log, "3600000"]).await.as_deref(),
        Some("1")
    );
    broker.publish(&room, request(2, None)).await.unwrap();
    let kept = pttl(&redis, &log).await;
    assert!(
        kept > 3_000_000,
        "the stream's expiry was set again ({kept} ms)"
    );

    // A stream deleted behind the function's back while its expiry is not due is made
    // again by the next publish, with an expiry.
    assert_eq!(redis.cli(&["DEL", &log]).await.as_deref(), Some("1"));
    publish_and_check_expiries(&redis, &broker, &long, None, "after DEL of the stream").await;

    // An epoch reset (reset_epoch.lua deletes the stream) keeps both expiries.
    let top = broker
        .history(&room, HistoryQuery::Latest { limit: 0 })
        .await
        .unwrap()
        .top;
    let fresh = broker.reset_epoch(&room, &top.epoch).await.unwrap();
    assert_ne!(fresh.epoch, top.epoch);
    publish_and_check_expiries(&redis, &broker, &long, None, "after an epoch reset").await;
    let ack = broker.publish(&room, request(3, None)).await.unwrap();
    assert_eq!((ack.position.epoch, ack.position.seq), (fresh.epoch, 2));

    // Shorter lifetimes apply at the next publish, not once the longer ones ran out; and
    // longer ones again likewise.
    let key = Some("client:short");
    publish_and_check_expiries(&redis, &shortened, &short, key, "shortened").await;
    publish_and_check_expiries(&redis, &shortened, &short, None, "shortened, again").await;
    publish_and_check_expiries(&redis, &broker, &long, None, "lengthened").await;
}

/// `FCALL`s Redis has run so far (`INFO commandstats`).
async fn fcalls(redis: &RedisServer) -> u64 {
    let stats = redis
        .cli(&["INFO", "commandstats"])
        .await
        .expect("redis-cli ran");
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_fcall:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

/// Publishes that wait at the same time reach Redis in one call of several (on one
/// Redis; see batch.rs), and each keeps its own answer: every room's publications are
/// sequenced once and without a gap, a key repeated in the same wave gets the original
/// ack, and a room whose publications fail (its meta key holds a string) fails alone,
/// not the others that went in the same call. (A current-thread runtime, so that the
/// whole wave is waiting before the collecting task runs: the count of calls is exact.)
#[tokio::test]
async fn redis_sends_publishes_that_wait_together_in_one_call() {
    let redis = RedisServer::start().await;
    // A buffer that holds every publication of the wave, to read each one back.
    let history = HistorySettings {
        size: 100,
        ..settings()
    };
    let (broker, _events) = ready_redis_broker(&redis, "batch", history).await;
    let prefix = Config::defaults().redis.key_prefix;
    let warm = RoomName::new_unchecked("batch-warm");
    broker.publish(&warm, request(0, None)).await.unwrap(); // loads the library
    let broken = RoomName::new_unchecked("batch-broken");
    let broken_meta = format!("{prefix}:{{batch-broken}}:meta");
    assert_eq!(
        redis.cli(&["SET", &broken_meta, "x"]).await.as_deref(),
        Some("OK")
    );
    let rooms: Vec<RoomName> = (0..10)
        .map(|r| RoomName::new_unchecked(format!("batch-{r}")))
        .collect();
    let before = fcalls(&redis).await;

    // 10 rooms × 10 publishes with keys, each key sent twice, and 5 to the broken room:
    // 205 publishes at once.
    let mut wave = Vec::new();
    for n in 0..10u64 {
        for room in &rooms {
            for _ in 0..2 {
                wave.push((room.clone(), Some(format!("client:batch:{room}:{n}"))));
            }
        }
    }
    wave.extend((0..5).map(|_| (broken.clone(), None)));
    // Each publication carries its own place in the wave as its data.
    let acks = futures_util::future::join_all(
        wave.iter()
            .enumerate()
            .map(|(i, (room, key))| broker.publish(room, request(i as u64, key.as_deref()))),
    )
    .await;
    let calls = fcalls(&redis).await - before;
    assert_eq!(calls, 205u64.div_ceil(32), "205 publishes in calls of 32");

    let mut by_key = std::collections::HashMap::new();
    let mut seqs: std::collections::HashMap<&RoomName, Vec<u64>> = Default::default();
    let mut stored = std::collections::HashMap::new();
    for room in &rooms {
        let page = broker
            .history(room, HistoryQuery::After { seq: 0, limit: 100 })
            .await
            .unwrap();
        for publication in page.publications {
            stored.insert((room.clone(), publication.seq), publication.data.clone());
        }
    }
    for (i, ((room, key), ack)) in wave.iter().zip(acks).enumerate() {
        let Some(key) = key else {
            assert!(ack.is_err(), "the broken room's publish failed");
            continue;
        };
        let ack = ack.unwrap_or_else(|e| panic!("{room}: {e}"));
        if !ack.duplicate {
            seqs.entry(room).or_default().push(ack.position.seq);
            // The ack names the publication that carried this request's data.
            assert_eq!(
                stored.get(&(room.clone(), ack.position.seq)),
                Some(&json!({ "n": i })),
                "{room} seq {}",
                ack.position.seq
            );
        }
        by_key.entry(key.clone()).or_insert_with(Vec::new).push(ack);
    }
    for (key, acks) in &by_key {
        assert_eq!(acks.len(), 2);
        assert_eq!(acks[0].position, acks[1].position, "{key}: one position");
        assert_eq!(
            acks.iter().filter(|a| a.duplicate).count(),
            1,
            "{key}: one original, one repeat"
        );
    }
    for room in &rooms {
        let mut room_seqs = seqs.remove(room).unwrap_or_default();
        room_seqs.sort_unstable();
        assert_eq!(room_seqs, (1..=10).collect::<Vec<_>>(), "{room}");
    }

    // One publish alone still goes alone, after the wave.
    let single = broker.publish(&warm, request(2, None)).await.unwrap();
    assert_eq!(single.position.seq, 2);
}

/// While two calls are unanswered, publishes that arrive one by one wait and go in the
/// next call together (batch.rs, as a group commit): Redis is stopped while two
/// publishes go out alone and ten more arrive, each in a turn of its own; once Redis
/// runs again, the ten reach it in one call. Each is acked with its own position, in
/// the order the publishes came. One more, whose publisher stopped waiting before
/// Redis ran again, is not sent at all.
#[tokio::test]
async fn redis_gathers_publishes_that_arrive_while_calls_are_unanswered() {
    const PUBLISHES: u64 = 12;
    const APART: Duration = Duration::from_millis(15);
    let redis = RedisServer::start().await;
    let (broker, _events) = ready_redis_broker(&redis, "gather", settings()).await;
    let room = RoomName::new_unchecked("gather");
    broker.publish(&room, request(0, None)).await.unwrap(); // loads the library
    let before = fcalls(&redis).await;

    redis.signal("STOP");
    let publishes = (1..=PUBLISHES).map(|n| {
        let (broker, room) = (&broker, &room);
        async move {
            tokio::time::sleep(APART * n as u32).await;
            broker.publish(room, request(n, None)).await
        }
    });
    let abandoned = async {
        tokio::time::sleep(APART * (PUBLISHES as u32 + 1)).await;
        let publish = broker.publish(&room, request(99, None));
        tokio::time::timeout(APART, publish).await
    };
    // Well within the command timeout (1 s) of the first call.
    let resume = async {
        tokio::time::sleep(APART * (PUBLISHES as u32 + 6)).await;
        redis.signal("CONT");
    };
    let (acks, abandoned, ()) =
        tokio::join!(futures_util::future::join_all(publishes), abandoned, resume);
    assert!(abandoned.is_err(), "the last publish was given up");

    assert_eq!(
        fcalls(&redis).await - before,
        3,
        "two calls alone, then the ten that waited for them in one"
    );
    for (n, ack) in (1..=PUBLISHES).zip(acks) {
        let ack = ack.unwrap_or_else(|e| panic!("publish {n}: {e}"));
        assert_eq!(ack.position.seq, n + 1, "publish {n}");
    }
    let next = broker.publish(&room, request(100, None)).await.unwrap();
    assert_eq!(
        next.position.seq,
        PUBLISHES + 2,
        "the abandoned one was not sent"
    );
}

/// The Pub/Sub connection of one Redis speaks RESP3, whose messages the broker takes
/// through a bounded queue (`pushes.rs`), while the command connection keeps the
/// protocol its URL asks for (RESP2 here); publications come through it.
#[tokio::test]
async fn redis_pubsub_speaks_resp3_and_commands_keep_the_urls_protocol() {
    let redis = RedisServer::start().await;
    let (broker, mut events) = ready_redis_broker(&redis, "resp", settings()).await;
    let room = RoomName::new_unchecked("resp");
    broker.subscribe(&room).await.unwrap();
    broker.publish(&room, request(1, None)).await.unwrap();
    assert_eq!(next_publication_seq(&mut events).await, 1);

    let clients = redis.cli(&["CLIENT", "LIST"]).await.expect("redis-cli ran");
    let field = |line: &str, name: &str| -> String {
        let prefix = format!("{name}=");
        let value = line
            .split(' ')
            .find_map(|f| f.strip_prefix(prefix.as_str()));
        value.unwrap_or_default().to_owned()
    };
    let broker_clients: Vec<&str> = clients
        .lines()
        .filter(|line| !field(line, "cmd").starts_with("client|list"))
        .collect();
    let (subscribers, commands): (Vec<&str>, Vec<&str>) = broker_clients
        .iter()
        .partition(|line| field(line, "sub") != "0");
    assert_eq!(subscribers.len(), 1, "{clients}");
    assert_eq!(field(subscribers[0], "resp"), "3", "{clients}");
    assert!(!commands.is_empty(), "{clients}");
    for line in commands {
        assert_eq!(field(line, "resp"), "2", "{line}");
    }
}

/// A full call does not wait for the calls in flight (batch.rs): however far Redis is,
/// the limit on unanswered calls never caps the rate at so many publications per round
/// trip. Redis is stopped while two publishes go out alone; then 40 arrive at once, and
/// their publishers give up before Redis runs again. The first 32 went at once, a full
/// call, and are published when Redis runs (a publish given up is an unknown outcome,
/// not a failure); the 8 that waited for a call in flight are not sent.
#[tokio::test]
async fn redis_sends_a_full_call_without_waiting_for_the_calls_in_flight() {
    const APART: Duration = Duration::from_millis(15);
    let redis = RedisServer::start().await;
    let (broker, _events) = ready_redis_broker(&redis, "full", settings()).await;
    let room = RoomName::new_unchecked("full");
    broker.publish(&room, request(0, None)).await.unwrap(); // loads the library

    redis.signal("STOP");
    let alone = (1..=2u64).map(|n| {
        let (broker, room) = (&broker, &room);
        async move {
            tokio::time::sleep(APART * n as u32).await;
            broker.publish(room, request(n, None)).await
        }
    });
    let given_up = async {
        tokio::time::sleep(APART * 4).await;
        let wave = (10..50u64).map(|n| broker.publish(&room, request(n, None)));
        tokio::time::timeout(APART, futures_util::future::join_all(wave)).await
    };
    let resume = async {
        tokio::time::sleep(APART * 10).await;
        redis.signal("CONT");
    };
    let (alone, given_up, ()) =
        tokio::join!(futures_util::future::join_all(alone), given_up, resume);
    assert!(given_up.is_err(), "the 40 were given up");
    for ack in alone {
        ack.unwrap();
    }
    let next = broker.publish(&room, request(100, None)).await.unwrap();
    assert_eq!(next.position.seq, 1 + 2 + 32 + 1, "the full call was sent");
}

/// A publish while the command connection reconnects to a Redis that does not answer is
/// answered within the command timeout (1 s), not after the reconnect's tries (about
/// 10 s): the connection is dropped and Redis stopped before it can come back. The
/// first publish finds the connection broken and opens the circuit; once the circuit's
/// cooldown (the probe interval, 1 s) is over, the next goes through as the trial, and
/// waits for the reconnect.
#[tokio::test]
async fn redis_answers_within_the_command_timeout_while_reconnecting() {
    let redis = RedisServer::start().await;
    let (broker, _events) = ready_redis_broker(&redis, "reconnect", settings()).await;
    let room = RoomName::new_unchecked("reconnect");
    broker.publish(&room, request(0, None)).await.unwrap();

    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert!(
        killed.is_some_and(|n| n != "0"),
        "the command connection was dropped"
    );
    redis.signal("STOP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let broken = broker.publish(&room, request(1, None)).await;
    assert!(broken.is_err(), "{broken:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = tokio::time::Instant::now();
    let trial = broker.publish(&room, request(2, None)).await;
    let took = started.elapsed();
    redis.signal("CONT");
    assert!(
        matches!(trial, Err(roomcast::broker::BrokerError::Timeout(_))),
        "{trial:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
}
