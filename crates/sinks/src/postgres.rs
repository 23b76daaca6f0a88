//! The PostgreSQL sink: points as rows of one plain table, written idempotently.
//!
//! The table (created if missing) has one row per point and the primary key
//! `(device_id, field, ts)`, the same identity the embedded store uses, so a batch that is
//! retried after a lost acknowledgement, or a point that two ingest instances both received,
//! is stored once: later writes of the same key replace the row, as in the store.
//!
//! ```sql
//! CREATE TABLE fieldlab_points (
//!   device_id text, field text, ts timestamptz, device_type text, tags jsonb,
//!   value_f64 float8, value_i64 int8, value_bool bool, value_str text,
//!   PRIMARY KEY (device_id, field, ts))
//! ```
//!
//! A batch is one statement: `INSERT ... SELECT FROM unnest($1::text[], ...) ON CONFLICT DO
//! UPDATE` with one array parameter per column — one round trip, binary parameters, no SQL
//! built from data. Plain SQL keeps it portable to TimescaleDB (make the table a hypertable),
//! Citus (distribute it by `device_id`) and YugabyteDB.

use crate::SinkConfig;
use crate::{SinkError, Target};
use fieldlab_core::{FieldValue, Point};
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

/// One PostgreSQL connection (re-established after errors) writing into one table.
pub struct Postgres {
    url: String,
    table: String,
    timeout: Duration,
    conn: Option<(Client, Statement)>,
}

impl Postgres {
    pub fn new(c: &SinkConfig) -> Result<Postgres, SinkError> {
        c.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| SinkError::Config(format!("the postgres url is not valid: {e}")))?;
        Ok(Postgres {
            url: c.url.clone(),
            table: c.table.clone(),
            timeout: crate::duration(c.timeout),
            conn: None,
        })
    }

    /// The DDL this sink runs at connect time.
    pub fn create_table_sql(table: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\n\
             \x20 device_id text NOT NULL,\n\
             \x20 field text NOT NULL,\n\
             \x20 ts timestamptz NOT NULL,\n\
             \x20 device_type text NOT NULL DEFAULT '',\n\
             \x20 tags jsonb NOT NULL DEFAULT '{{}}',\n\
             \x20 value_f64 double precision,\n\
             \x20 value_i64 bigint,\n\
             \x20 value_bool boolean,\n\
             \x20 value_str text,\n\
             \x20 PRIMARY KEY (device_id, field, ts))"
        )
    }

    async fn connect(&self) -> Result<(Client, Statement), tokio_postgres::Error> {
        let cfg: tokio_postgres::Config = self.url.parse()?;
        let (client, connection) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres sink connection ended");
            }
        });
        client
            .batch_execute(&Self::create_table_sql(&self.table))
            .await?;
        let t = &self.table;
        let stmt = client
            .prepare(&format!(
                "INSERT INTO {t} (device_id, field, ts, device_type, tags, value_f64, value_i64, value_bool, value_str) \
                 SELECT d, f, 'epoch'::timestamptz + t * interval '1 millisecond', dt, tg::jsonb, vf, vi, vb, vs \
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::float8[], $7::int8[], $8::bool[], $9::text[]) \
                 AS u(d, f, t, dt, tg, vf, vi, vb, vs) \
                 ON CONFLICT (device_id, field, ts) DO UPDATE SET device_type = EXCLUDED.device_type, \
                 tags = EXCLUDED.tags, value_f64 = EXCLUDED.value_f64, value_i64 = EXCLUDED.value_i64, \
                 value_bool = EXCLUDED.value_bool, value_str = EXCLUDED.value_str"
            ))
            .await?;
        Ok((client, stmt))
    }
}

/// Is this error worth retrying (the server or the network), or about the data itself?
fn classify(e: tokio_postgres::Error) -> SinkError {
    let msg = format!("PostgreSQL: {e}");
    let Some(db) = e.as_db_error() else {
        return SinkError::Transient(msg); // I/O, closed connection, timeout
    };
    let code = db.code().code();
    let transient = [
        "08", // connection exception
        "40", // serialization failure, deadlock
        "53", // insufficient resources (disk full, too many connections)
        "57", // operator intervention (admin shutdown, cannot connect now)
        "58", // system error
        "XX", // internal error
    ]
    .iter()
    .any(|c| code.starts_with(c))
        || db.code() == &SqlState::LOCK_NOT_AVAILABLE;
    if transient {
        SinkError::Transient(format!("{msg} ({code})"))
    } else {
        SinkError::Permanent(format!("{msg} ({code})"))
    }
}

impl Target for Postgres {
    async fn write(&mut self, points: &[Point]) -> Result<Vec<(Point, String)>, SinkError> {
        if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let c = tokio::time::timeout(self.timeout, self.connect())
                .await
                .map_err(|_| SinkError::Transient("PostgreSQL: connect timed out".into()))?
                .map_err(classify)?;
            self.conn = Some(c);
        }
        // One statement may not touch a row twice; keep the last point of each key, as the
        // store does for equal timestamps.
        let mut last: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(points.len());
        for (i, p) in points.iter().enumerate() {
            last.insert((&p.key.device_id, &p.key.field, p.ts_ms), i);
        }
        let n = last.len();
        let (mut d, mut f, mut t, mut dt, mut tg) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut vf, mut vi, mut vb, mut vs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (i, p) in points.iter().enumerate() {
            if last[&(p.key.device_id.as_ref(), p.key.field.as_ref(), p.ts_ms)] != i {
                continue;
            }
            d.push(p.key.device_id.as_ref());
            f.push(p.key.field.as_ref());
            t.push(p.ts_ms);
            dt.push(p.tags.device_type.as_ref());
            tg.push(serde_json::to_string(&p.tags.extra).unwrap_or_else(|_| "{}".into()));
            let (a, b, c, s) = match &p.value {
                FieldValue::F64(v) => (Some(*v), None, None, None),
                FieldValue::I64(v) => (None, Some(*v), None, None),
                FieldValue::Bool(v) => (None, None, Some(*v), None),
                FieldValue::Str(v) => (None, None, None, Some(v.as_str())),
            };
            vf.push(a);
            vi.push(b);
            vb.push(c);
            vs.push(s);
        }
        let (client, stmt) = self.conn.as_ref().expect("connected above");
        let res = tokio::time::timeout(
            self.timeout,
            client.execute(stmt, &[&d, &f, &t, &dt, &tg, &vf, &vi, &vb, &vs]),
        )
        .await;
        match res {
            Ok(Ok(_)) => Ok(Vec::new()),
            Ok(Err(e)) => {
                let err = classify(e);
                if matches!(err, SinkError::Transient(_)) {
                    self.conn = None; // reconnect on the next attempt
                }
                Err(err)
            }
            Err(_) => {
                self.conn = None;
                Err(SinkError::Transient("PostgreSQL: write timed out".into()))
            }
        }
    }
}
