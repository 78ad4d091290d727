-- The schema of the user activity store. Runs unchanged on MySQL 8.0 and MariaDB 10.11, and is
-- safe to run again: docker compose mounts it into the MySQL init directory, and the consumer
-- applies it at start-up. No CREATE DATABASE / USE: the connection picks the database.

-- A change of the table waits at most 2 s for the transactions using it: while it waits, every
-- other statement on the table queues behind it. The consumer tries again later.
SET SESSION lock_wait_timeout = 2;
CREATE TABLE IF NOT EXISTS user_activities (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  -- Idempotency key: redeliveries and client retries of one event store one row.
  event_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  user_id INT NOT NULL,
  event_type VARCHAR(50) NOT NULL,
  -- UTC, millisecond precision (sessions run with time_zone '+00:00').
  `timestamp` DATETIME(3) NOT NULL,
  metadata JSON,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  -- When the producer received it (UTC); NULL for rows stored before the column existed.
  received_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_user_activities_event_id (event_id),
  KEY idx_user_activities_user_id_timestamp (user_id, `timestamp`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- A table made by an earlier version gains received_at, as its last column: an instant change
-- on both servers, whatever the table's size. (MySQL 8.0 has no ADD COLUMN IF NOT EXISTS.)
SET @add_received_at = (
  SELECT IF(COUNT(*) = 0, 'ALTER TABLE user_activities ADD COLUMN received_at DATETIME(3) NULL', 'DO 0')
  FROM information_schema.COLUMNS
  WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user_activities' AND COLUMN_NAME = 'received_at'
);
PREPARE add_received_at FROM @add_received_at;
EXECUTE add_received_at;
DEALLOCATE PREPARE add_received_at;

-- Events per UTC hour and event type, by the event's timestamp: what GET /api/v1/stats/events
-- reads. The consumer adds the rows an INSERT stored in the same transaction, so it always
-- equals COUNT(*) over user_activities (event types compare as that table's column does).
-- Created once, filled from the rows already stored: when the table exists the SELECT is
-- skipped (CREATE TABLE IF NOT EXISTS ... SELECT inserts nothing then, on both servers).
CREATE TABLE IF NOT EXISTS user_activity_counts (
  bucket_start DATETIME NOT NULL,
  event_type VARCHAR(50) NOT NULL,
  event_count BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (bucket_start, event_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
SELECT
  CAST(DATE_FORMAT(`timestamp`, '%Y-%m-%d %H:00:00') AS DATETIME) AS bucket_start,
  event_type,
  COUNT(*) AS event_count
FROM user_activities
GROUP BY bucket_start, event_type;

-- Erased users (DELETE /api/v1/users/{user_id}/events, `npm run erase`): a user's events that
-- the producer received at or before erased_before (their received_at; all of them when it is
-- unknown) are never stored again. The consumer checks this table after each batch's INSERT, in
-- the same transaction, and removes the stored ones in chunks; completed_at is set once they are
-- gone. A second erasure of the same user moves erased_before on.
CREATE TABLE IF NOT EXISTS user_erasures (
  user_id INT NOT NULL,
  erased_before DATETIME(3) NOT NULL,
  completed_at DATETIME(3) NULL,
  PRIMARY KEY (user_id),
  KEY idx_user_erasures_pending (completed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
