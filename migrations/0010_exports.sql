-- Exports (see crates/domain/src/contracts/jobs.rs): the durable side of an export job.
--
-- The worker that first claims a job plans it (pages of whole UTC hours holding about
-- EXPORT_PAGE_ROWS rows each, from a count per hour) and records the plan here; each
-- page's CSV is written in one transaction with the job's progress, as parts of at most
-- a few MB, so a worker killed mid-job leaves whole pages behind and the next one
-- resumes at the first page missing. `attempt` fences a worker that lost its lease: its
-- page commit matches no row and rolls back. Every key includes site_id (ready to
-- distribute by site).
CREATE TABLE export_jobs (
    site_id     text        NOT NULL,
    job_id      uuid        NOT NULL,
    kind        text        NOT NULL,
    spec        jsonb       NOT NULL,
    -- [[start epoch ms, end epoch ms, rows counted when planned], ...]
    plan        jsonb       NOT NULL,
    attempt     integer     NOT NULL,
    pages_done  integer     NOT NULL DEFAULT 0,
    completed   bigint      NOT NULL DEFAULT 0,
    total       bigint      NOT NULL,
    bytes       bigint      NOT NULL DEFAULT 0,
    state       text        NOT NULL DEFAULT 'running',
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    expires_at  timestamptz,
    PRIMARY KEY (site_id, job_id)
);
CREATE INDEX export_jobs_job ON export_jobs (job_id);
CREATE INDEX export_jobs_expiry ON export_jobs (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE export_parts (
    site_id text    NOT NULL,
    job_id  uuid    NOT NULL,
    page    integer NOT NULL,
    part    integer NOT NULL,
    rows    integer NOT NULL,
    data    bytea   NOT NULL,
    PRIMARY KEY (site_id, job_id, page, part),
    FOREIGN KEY (site_id, job_id) REFERENCES export_jobs ON DELETE CASCADE
);
-- Not compressed by pglz: it would cost the export more CPU than the disk it saves.
ALTER TABLE export_parts ALTER COLUMN data SET STORAGE EXTERNAL;
