-- The schema of the user activity store. Runs unchanged on MySQL 8.0 and MariaDB 10.11, and is
-- safe to run again: docker compose mounts it into the MySQL init directory, and the consumer
-- applies it at start-up. No CREATE DATABASE / USE: the connection picks the database.
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
  PRIMARY KEY (id),
  UNIQUE KEY uq_user_activities_event_id (event_id),
  KEY idx_user_activities_user_id_timestamp (user_id, `timestamp`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
