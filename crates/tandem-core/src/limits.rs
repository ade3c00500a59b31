//! Every limit of tandem as a named constant, with what it costs. Units last in names.
//! Overridable limits are `DEFAULT_*`; the config key that overrides them is named beside.

// ---- collect: the Segment tracking API (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#max-request-size)

/// Largest single event Segment accepts ("32KB per call"); larger events are rejected with 400
/// `event_too_large`. Bounds the memory one event can pin while it is parsed and enriched.
pub const EVENT_BYTES_MAX: usize = 32 * 1024;
/// Largest request body (after gzip decoding) for `/v1/batch` and `/v1/import` ("500KB per batch").
/// Bounds the memory one request can pin: concurrency × this is the worst case.
pub const BATCH_BYTES_MAX: usize = 500 * 1024;
/// Largest compressed body read off the socket before decoding; anything bigger cannot decode
/// to a valid batch worth keeping, so it is refused early with 400 `body_too_large`.
pub const REQUEST_BODY_BYTES_MAX: usize = BATCH_BYTES_MAX;
/// Most events in one batch (Segment: 2500). More → 400 `batch_too_many_events`.
pub const BATCH_EVENTS_MAX: usize = 2500;
/// Longest `messageId` (Segment: 100 characters). Longer → the event is rejected.
pub const MESSAGE_ID_CHARS_MAX: usize = 100;
/// Deepest JSON nesting accepted in an event (serde_json's own recursion limit is 128);
/// deeper payloads are rejected with `invalid_json` rather than exhausting the stack.
pub const JSON_DEPTH_MAX: usize = 128;

/// How long a (source, messageId) pair is remembered for deduplication. Config `collect.dedup_window_hours`.
pub const DEFAULT_DEDUP_WINDOW_HOURS: u64 = 24;
/// Most (source, messageId) pairs held in memory for deduplication (~40 B each with the age queue,
/// so 20 M ≈ 800 MiB at most; a day at 230 events/s on average).
/// When full, the oldest are forgotten first and `tandem_dedup_window_seconds` shows the window
/// actually covered. Config `collect.dedup_entries_max`.
pub const DEFAULT_DEDUP_ENTRIES_MAX: usize = 20_000_000;

// ---- the durable log

/// A segment file is sealed and a new one started past this size. Bounds the work of recovery
/// (only the active segment is scanned at start) and the unit of retention. Config `log.segment_bytes_max`.
pub const DEFAULT_SEGMENT_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Bytes of appends waiting for the writer of one log before new requests get 503 + Retry-After.
/// Bounds memory under overload. Config `log.queue_bytes_max`.
pub const DEFAULT_LOG_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most bytes written between two fsyncs by the group-commit writer: larger groups amortise the
/// fsync better but delay the first request of the group.
pub const GROUP_COMMIT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest single log record (an envelope: header + enriched event JSON).
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// Free space below which the data disk counts as full: appends are refused with 503 before the
/// filesystem itself fails, leaving room for offsets, sidecars and the metadata store. Config `log.disk_free_bytes_min`.
pub const DEFAULT_DISK_FREE_BYTES_MIN: u64 = 64 * 1024 * 1024;

// ---- HTTP

/// Seconds a client is asked to wait (`Retry-After`) when tandem pushes back with 429/503.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// Most simultaneous Server-Sent-Event debug streams; each holds a broadcast receiver.
pub const LIVE_STREAMS_MAX: usize = 64;
/// Events buffered per live debug stream before a slow viewer starts missing events (it is told how many).
pub const LIVE_STREAM_BUFFER_EVENTS: usize = 1024;

// ---- Unify (identity resolution and profiles)

/// Longest identifier type name (`user_id`, `email`, a custom `context.externalIds` type).
pub const IDENTIFIER_TYPE_BYTES_MAX: usize = 64;
/// Longest identifier value kept; a longer value is ignored for resolution (and counted), since
/// no real id is that long and such values are usually payloads sent by mistake.
pub const IDENTIFIER_VALUE_BYTES_MAX: usize = 256;
/// Most identifiers one event contributes (userId, anonymousId, email, phone, device ids and
/// `context.externalIds`); the rest are ignored by priority order.
pub const EVENT_IDENTIFIERS_MAX: usize = 32;
/// Default most values of one identifier type a profile may hold (`user_id` is 1).
pub const DEFAULT_IDENTIFIER_LIMIT: u32 = 5;
/// Most traits one profile keeps; a new trait beyond it is ignored (and counted).
pub const PROFILE_TRAITS_MAX: usize = 1000;
/// Most records the unify consumer applies in one store transaction.
pub const UNIFY_BATCH_RECORDS_MAX: usize = 2000;
/// The unify consumer makes its state durable (fsync) at least this often; in between, a crash
/// replays the records since the last durable commit, which is harmless since applying an event
/// twice changes nothing.
pub const UNIFY_DURABLE_COMMIT_MS: u64 = 1000;
/// Default and largest `limit` of a Profile API list (Segment's defaults: 10 and 200).
pub const PROFILE_API_LIMIT_DEFAULT: usize = 10;
pub const PROFILE_API_LIMIT_MAX: usize = 200;
/// Most computed traits one workspace defines.
pub const COMPUTED_TRAITS_MAX: usize = 100;
/// Most distinct values a `most_frequent` or `unique_count` computed trait tracks per profile
/// (per day bucket when windowed); beyond it new values are not counted and the trait is marked
/// as a lower bound.
pub const COMPUTED_DISTINCT_VALUES_MAX: usize = 1000;
/// Most bytes of one file posted to the import API (`POST …/sources/{source}/imports`); a larger
/// upload answers 400 `body_too_large` and leaves no job behind.
pub const IMPORT_UPLOAD_BYTES_MAX: u64 = 1 << 30;
/// Rejected rows an import job's progress lists (its counts cover every row).
pub const IMPORT_REJECTIONS_SHOWN: usize = 100;
/// Retries of one chunk of an import job while the log is overloaded, the disk full or the
/// source rate-limited (with backoff, honouring the suggested wait): beyond them the job fails.
pub const IMPORT_RETRIES_MAX: u32 = 30;

// Transformations (tandem-transform): JavaScript run per event in a QuickJS sandbox. Each
// `DEFAULT_TRANSFORM_*` value is what `TransformLimits::default()` uses; a connection may set
// its own.

/// CPU time one event's transformation may use (thread CPU time, checked by the engine's
/// interrupt handler every few thousand bytecode operations and during regular-expression
/// matching). Past it the run ends with a `timeout` error. A poison event holds its delivery lane
/// at most this long per attempt.
pub const DEFAULT_TRANSFORM_CPU_MS: u64 = 50;
/// Memory one transformation runtime may hold (QuickJS's allocator limit, covering the built-ins
/// (~0.25 MiB), the compiled code, the event and everything the code allocates). Past it the run
/// ends with an `out_of_memory` error instead of growing the process. Cost: up to this much per
/// runtime, and a transformation keeps up to `TRANSFORM_RUNTIMES_MAX` runtimes.
pub const DEFAULT_TRANSFORM_MEMORY_BYTES: usize = 16 * 1024 * 1024;
/// Smallest memory limit accepted: below it the built-ins alone do not fit.
pub const TRANSFORM_MEMORY_BYTES_MIN: usize = 2 * 1024 * 1024;
/// Native stack the JavaScript of one event may use (QuickJS's stack limit: deep recursion ends
/// with a `stack_overflow` error, not a crashed thread). The calling thread must have this much
/// stack to spare: tokio's workers and blocking threads have 2 MiB.
pub const DEFAULT_TRANSFORM_STACK_BYTES: usize = 256 * 1024;
/// Largest stack limit accepted (a quarter of the 2 MiB threads run with).
pub const TRANSFORM_STACK_BYTES_MAX: usize = 512 * 1024;
/// Most events one input event may fan out to (an array returned by `transform`).
pub const DEFAULT_TRANSFORM_OUTPUT_EVENTS_MAX: usize = 100;
/// Most bytes of JSON one input event may turn into (all its output events together).
pub const DEFAULT_TRANSFORM_OUTPUT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most QuickJS runtimes one transformation keeps for concurrent callers (the default is the
/// number of cores, capped here). Each costs ~0.25 MiB idle and ~6 ms to create, and may grow
/// to its memory limit.
pub const TRANSFORM_RUNTIMES_MAX: usize = 8;
/// Most events one test run of a transformation (`POST …/transformations/test`) may carry.
pub const TRANSFORM_TEST_EVENTS_MAX: usize = 100;
/// Recent events a transformation test takes when the request names none (`recent` absent).
pub const TRANSFORM_TEST_RECENT_DEFAULT: usize = 10;
/// Most log records a transformation test reads backwards from the log's end looking for
/// recent events that pass the connection's filters: bounds the work of one request when the
/// filters match little (fewer events than asked are returned then).
pub const TRANSFORM_TEST_SCAN_RECORDS_MAX: usize = 20_000;
/// Most tracking plans one workspace may have (every collect request of a governed source finds
/// its plan in a map built from them; each API change rebuilds it).
pub const TRACKING_PLANS_PER_WORKSPACE_MAX: usize = 100;
/// Most event schemas one plan may hold (each is compiled once per plan version and kept).
pub const TRACKING_PLAN_EVENTS_MAX: usize = 2_000;
/// Most violations recorded for one event (a schema can fail an event in many places; the
/// counters and `context.violations` keep the first ones).
pub const TRACKING_PLAN_VIOLATIONS_PER_EVENT_MAX: usize = 20;
/// Violation counters (plan, event, field, source) one workspace keeps; past it, new
/// combinations are counted only in `/metrics`, so random field names cannot grow memory.
pub const TRACKING_PLAN_VIOLATION_COUNTERS_MAX: usize = 10_000;
/// Recent samples (messageId, message, time) kept per violation counter.
pub const TRACKING_PLAN_VIOLATION_SAMPLES: usize = 5;
/// Most events `tracking-plans/infer` reads (each is parsed and its properties kept in memory
/// for the request).
pub const TRACKING_PLAN_INFER_EVENTS_MAX: usize = 10_000;
/// Most log records inference reads backwards looking for the source's events.
pub const TRACKING_PLAN_INFER_SCAN_RECORDS_MAX: usize = 100_000;
/// A string property gets an inferred `enum` when it took at most this many distinct values (and
/// repeated them): a small closed set, like a currency or a plan tier.
pub const TRACKING_PLAN_INFER_ENUM_VALUES_MAX: usize = 10;
/// Events waiting in one workspace's quarantine (an index entry of ~200 B each is kept in
/// memory); past it, quarantined events are refused with 503 + Retry-After until some are
/// released or discarded.
pub const QUARANTINE_PENDING_EVENTS_MAX: usize = 100_000;
/// Quarantined events listed per page by default, and at most.
pub const QUARANTINE_LISTED_DEFAULT: usize = 50;
pub const QUARANTINE_LISTED_MAX: usize = 1000;
/// Most quarantined events one release or discard request handles (it reads each one back from
/// the quarantine log and appends them to the workspace log as one group).
pub const QUARANTINE_RELEASE_EVENTS_MAX: usize = 10_000;
/// Most bytes of a transformation's source code.
pub const TRANSFORM_CODE_BYTES_MAX: usize = 256 * 1024;
// ---- Warehouse destination (PostgreSQL)

/// Default most events in one warehouse load (one transaction): warehouses prefer few large
/// transactions; larger batches hold row locks longer and re-load more after a failure.
pub const DEFAULT_WAREHOUSE_BATCH_EVENTS_MAX: usize = 1_000;
/// Default age at which a partial warehouse batch is loaded anyway: the freshness floor of the
/// tables on a quiet connection.
pub const DEFAULT_WAREHOUSE_BATCH_AGE_MS: u64 = 5_000;
/// Default connections a warehouse destination holds open (one per lane in flight).
pub const DEFAULT_WAREHOUSE_POOL_SIZE: usize = 4;
/// Most connections a warehouse destination may hold open (each is a server process).
pub const WAREHOUSE_POOL_SIZE_MAX: usize = 32;
/// Most columns tandem creates in one table (PostgreSQL stops at 1,600): each column widens
/// every row and every insert; properties beyond it are not stored and are reported.
pub const WAREHOUSE_TABLE_COLUMNS_MAX: usize = 1_000;
/// Most per-event tables in one schema: each is a relation the server keeps in its catalog
/// caches; later event names still land in `tracks` and are reported.
pub const WAREHOUSE_EVENT_TABLES_MAX: usize = 1_000;
/// Depth to which nested objects are flattened into `parent_child` columns; deeper objects are
/// stored as JSON text (deep flattening multiplies columns).
pub const WAREHOUSE_FLATTEN_DEPTH_MAX: usize = 3;
/// Schema problems (type conflicts, dropped properties) kept in memory per destination for the
/// API; all of them are also upserted into the warehouse's `schema_problems` table.
pub const WAREHOUSE_SCHEMA_PROBLEMS_KEPT: usize = 200;

// ---- Activate (destinations and delivery)

/// Default most events in one delivery batch (a connection's `delivery.batch_events_max`, never
/// above the destination's own limit). Larger batches cost more memory per lane in flight and
/// more re-sending when a batch is retried whole.
pub const DEFAULT_DELIVERY_BATCH_EVENTS_MAX: usize = 500;
/// Default most bytes of serialized events in one batch (`delivery.batch_bytes_max`).
pub const DEFAULT_DELIVERY_BATCH_BYTES_MAX: usize = 4 << 20;
/// Largest `delivery.batch_bytes_max` accepted: the in-flight memory is lanes × this.
pub const DELIVERY_BATCH_BYTES_MAX: usize = 16 << 20;
/// Largest `delivery.batch_events_max` accepted.
pub const DELIVERY_BATCH_EVENTS_MAX: usize = 10_000;
/// Default time a batch waits to fill before it is sent anyway (`delivery.batch_age_ms`): the
/// latency floor of a quiet connection.
pub const DEFAULT_DELIVERY_BATCH_AGE_MS: u64 = 200;
/// Default lanes in flight per connection (`delivery.concurrency`).
pub const DEFAULT_DELIVERY_LANES: usize = 4;
/// Most lanes per connection: each holds one batch in flight (memory) and one connection to the
/// destination.
pub const DELIVERY_LANES_MAX: usize = 64;
/// Default retry budget of one event (`delivery.retry_max_seconds`, 6 h): past it the event goes
/// to the DLQ with its last error. Longer budgets hold the connection's offset back longer.
pub const DEFAULT_DELIVERY_RETRY_MAX_SECONDS: u64 = 6 * 3600;
/// Default timeout of one request to a destination (`delivery.request_timeout_ms`).
pub const DEFAULT_DELIVERY_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// First retry delay; doubles per attempt (full jitter: a uniform wait in [0, delay]).
pub const DELIVERY_BACKOFF_BASE_MS: u64 = 100;
/// Longest retry delay (also the cap on a destination's `Retry-After`, so a bogus huge value
/// cannot park a connection for days).
pub const DELIVERY_BACKOFF_CAP_MS: u64 = 60_000;
/// Consecutive transient failures of a destination that open its circuit breaker; lanes then
/// wait and one probe batch tests the destination.
pub const DELIVERY_CIRCUIT_FAILURES: u32 = 5;
/// Longest an open circuit waits before its next probe when the destination gave no
/// `Retry-After` (the open period doubles from 800 ms up to this): the most a recovered
/// destination waits to be noticed. Costs one request per period to a destination that is down.
pub const DELIVERY_CIRCUIT_OPEN_MS_MAX: u64 = 5_000;
/// Records the delivery worker holds between the committed offset and the newest record read
/// (the in-flight window): a kill -9 redelivers at most these. Bounds memory per connection.
pub const DELIVERY_IN_FLIGHT_RECORDS_MAX: usize = 20_000;
/// The delivery worker commits its offset at most this often (each commit is an fsync).
pub const DELIVERY_COMMIT_INTERVAL_MS: u64 = 200;
/// Last errors kept per connection for the API.
pub const DELIVERY_LAST_ERRORS_KEPT: usize = 20;
/// Most destinations / connections per workspace.
pub const DESTINATIONS_PER_WORKSPACE_MAX: usize = 200;
pub const CONNECTIONS_PER_WORKSPACE_MAX: usize = 500;
/// Most field mappings per connection (each is applied to every event).
pub const CONNECTION_MAPPINGS_MAX: usize = 100;
/// Default and largest page of a DLQ listing.
pub const DLQ_ENTRIES_LISTED_DEFAULT: usize = 50;
pub const DLQ_ENTRIES_LISTED_MAX: usize = 1000;
/// Most entries one DLQ keeps per connection: past it new dead letters are still stored (never
/// lost) but an alert is raised, since a DLQ that large means nobody is looking.
pub const DLQ_ENTRIES_ALERT: u64 = 100_000;
/// CPU time one transformation may spend on one event before it is stopped (→ DLQ).
pub const TRANSFORM_CPU_MS_MAX: u64 = 50;
/// Alerts kept in memory for `/api/v1/alerts` (oldest dropped first).
pub const ALERTS_KEPT: usize = 500;
/// Most bytes of one audit entry's `before`/`after`/`details` JSON together; larger values are
/// replaced by their size and SHA-256 (the entry still records who changed what, and when). Every
/// audited change writes its entry with an fsync, so this also bounds that write.
pub const AUDIT_VALUE_BYTES_MAX: usize = 256 * 1024;
/// Most entries one `GET /api/v1/audit` page returns (it pages on with `after`).
pub const AUDIT_PAGE_ENTRIES_MAX: usize = 1000;
/// How long a login session lasts (12 h): the console logs in again after.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// Shortest password a user may be given (argon2 makes guessing slow, length makes it hopeless).
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longest password accepted: argon2 hashes the whole password on every login attempt.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// A token's `last_used_at` is written to the metadata store at most this often (each write is a
/// durable commit; reads of the token happen on every request).
pub const TOKEN_LAST_USED_WRITE_INTERVAL_MS: i64 = 60_000;
/// Longest expiry a management API token may be given (1 year); tokens without an expiry are
/// allowed only when created explicitly with `"expires_in_days": null`.
pub const API_TOKEN_EXPIRY_DAYS_MAX: i64 = 365;
/// Most users and most management API tokens one organization may have (each listing reads them all).
pub const USERS_MAX: usize = 10_000;
pub const API_TOKENS_MAX: usize = 10_000;

/// Recent events a change request's dry run puts through a proposed connection (read backwards
/// from the log's end, at most `TRANSFORM_TEST_SCAN_RECORDS_MAX` records scanned): each costs a
/// JSON parse, the mappings and one run of the transformation, on every `GET` of the request.
pub const CHANGE_DRY_RUN_EVENTS: usize = 100;
/// Sample events kept per outcome (sent, dropped, failed, changed) in a dry run's answer.
pub const CHANGE_DRY_RUN_SAMPLES: usize = 3;
/// Operations one change request may hold (an import of a whole workspace is one request): each
/// is validated, version-checked and written in the one apply transaction.
pub const CHANGE_REQUEST_OPERATIONS_MAX: usize = 500;
/// Bytes of one comment on a change request (kept in the request's stored JSON forever).
pub const CHANGE_REQUEST_COMMENT_BYTES_MAX: usize = 4_096;
/// Comments one change request may hold; its JSON is rewritten whole on each.
pub const CHANGE_REQUEST_COMMENTS_MAX: usize = 200;
/// Bytes of a TOML file given to `POST .../config/import` (parsed whole in memory).
pub const CONFIG_IMPORT_BYTES_MAX: usize = 1 << 20;

// Audiences (tandem-audiences) and the personalization API.

/// Most audiences one workspace defines (config file and API together). Every unify batch
/// evaluates the audiences of each profile it touched, so the count multiplies that work.
pub const AUDIENCES_PER_WORKSPACE_MAX: usize = 200;
/// Most condition nodes (leaves and all/any/not) in one audience definition.
pub const AUDIENCE_CONDITIONS_MAX: usize = 64;
/// Deepest nesting of all/any/not in one audience definition (evaluation recurses).
pub const AUDIENCE_CONDITION_DEPTH_MAX: usize = 8;
/// Most `where` filters on one event condition.
pub const AUDIENCE_EVENT_FILTERS_MAX: usize = 16;
/// Most values of one `in` list.
pub const AUDIENCE_IN_VALUES_MAX: usize = 1_000;
/// Longest `within_days` of an event condition: its hidden counter keeps up to one day bucket
/// per active day in the window, per profile (~24 B each).
pub const AUDIENCE_WINDOW_DAYS_MAX: u32 = 730;
/// Most distinct hidden event counters a workspace keeps (identical event conditions of several
/// audiences share one). Each costs one read-modify-write per matching event in unify.
pub const AUDIENCE_COUNTERS_MAX: usize = 256;
/// Profiles one backfill step evaluates in one store transaction, between unify batches: bounds
/// how long a backfill delays real-time evaluation (a few ms per step).
pub const AUDIENCE_BACKFILL_PROFILES_PER_STEP: usize = 500;
/// Profiles one preview reads per snapshot chunk (its progress moves in these steps).
pub const AUDIENCE_PREVIEW_CHUNK_PROFILES: usize = 5_000;
/// Sample members a preview (or a dry run) shows.
pub const AUDIENCE_PREVIEW_SAMPLES: usize = 20;
/// How long `POST …/audiences/preview` waits for its answer before answering 202 with the job
/// to poll (a preview over millions of profiles takes longer).
pub const AUDIENCE_PREVIEW_WAIT_MS: u64 = 10_000;
/// Finished previews kept per workspace for polling (oldest dropped first).
pub const AUDIENCE_PREVIEW_JOBS_KEPT: usize = 32;
/// Most members one page of `GET …/audiences/{id}/members` lists.
pub const AUDIENCE_MEMBERS_PAGE_MAX: usize = 1_000;
/// Identifiers of a profile an `Audience Entered`/`Exited` event carries in
/// `context.externalIds` (destinations match users by them).
pub const AUDIENCE_EVENT_IDENTIFIERS_MAX: usize = 25;
/// Outbox entries the drain appends to the log in one group (one fsync).
pub const AUDIENCE_OUTBOX_DRAIN_EVENTS_MAX: usize = 2_000;
/// Most profiles the personalization cache of one workspace holds (~1 KiB each with a few
/// allow-listed traits and memberships); beyond it the least recently used are evicted and
/// answered from the store on their next request (the documented miss path).
pub const PERSONALIZE_CACHE_PROFILES_MAX: usize = 200_000;
/// Most traits a workspace may allow-list for the personalization API.
pub const PERSONALIZE_TRAITS_MAX: usize = 50;
/// Most decision rules of one workspace (every request evaluates them all, in order).
pub const PERSONALIZE_RULES_MAX: usize = 100;
/// Most public (browser) keys of one workspace.
pub const PERSONALIZE_KEYS_MAX: usize = 100;

/// Most consent history rows one profile read returns (newest first).
pub const CONSENT_HISTORY_MAX: usize = 200;
/// Most recent log records `POST …/consent/explain` scans for a `message_id`.
pub const CONSENT_EXPLAIN_SCAN_RECORDS_MAX: usize = 200_000;
