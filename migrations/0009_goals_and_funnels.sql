-- A site's goals and funnels (see crates/domain/src/contracts/goals.rs): JSON lists kept
-- with the site's row, written with it from the registry's queued changes (so a change
-- to a goal is ordered against every other change of the site by the registry version).
-- stats-api applies them to the stored events when it answers.
ALTER TABLE sites
    ADD COLUMN goals   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN funnels jsonb NOT NULL DEFAULT '[]';
