//! Read-side benchmark (`cargo bench --bench read`): how close a pass's read comes to the best
//! any client could do against an API with per-call latency and a request quota, whether it
//! makes any call it did not need, and how much memory a large estate takes.
//!
//! Scenarios (each against a fresh in-process simulator on loopback):
//! * `quota-bound`: 2,000 governed services, 20 ms per call, Cloud Run reads limited to
//!   6,000/min (the quota dominates the lower bound);
//! * `latency-bound`: the same estate with a quota 10× larger (latency / concurrency dominates);
//! * `memory`: 10,000 services and 50,000 Auth0 users, in a child process so that its peak
//!   resident set (VmHWM) is its own.
//!
//! and with the clients' defaults (no rate configured: Google limits learned from the
//! simulator's Service Usage quotas, Auth0's from its `x-ratelimit-*` headers; issue 16):
//! * `a-defaults`: Cloud Run reads limited to 200/s per region (the simulator counts them per
//!   region, as Google does), Auth0 to 50/s, 20 ms per call;
//! * `b-defaults-10x-lower`: 20/s per region and Auth0 5/s;
//! * `c-defaults-shared`: two readers at once against one simulator, sharing its quota;
//! * `d-defaults-auth0-free`: Auth0 on the free plan (2/s);
//! * `apply-at-scale`: a pass whose plan changes every governed service, writes limited to
//!   50/s per region.
//!
//! Each of those prints calls, 429 answers (from the simulator's request log), wall time, the
//! lower bound (quotas summed over the regions) and the ratio (targets: ≤ 1.25, ≤ 1.5 for the
//! shared pair, ≤ 5 % throttled, 0 unnecessary calls).
//!
//! For each it prints the calls made (from the simulator's request log), the calls expected
//! (list pages + IAM reads + project reads + Auth0 calls, computed from the world's `generate`
//! parameters), wall time, the lower bound `max(calls × latency / concurrency, calls / quota)`
//! and the ratio of the two (target ≤ 1.25).

// The read tests' set-up (simulator plus clients); the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/read/support.rs"]
mod support;

use std::time::{Duration, Instant};

use runwarden::live::{ClientConfig, ReadConfig, read_live_with_stats};
use runwarden::policy::model::Desired;
use runwarden::retry::{Pace, Rate};

use support::*;

/// The estate of the timed scenarios: 2 projects × 2 regions × 500 services, teams of 20.
struct Estate {
    projects: u32,
    regions: Vec<&'static str>,
    per_region: u32,
    per_team: u32,
    users: u32,
    roles: u32,
    users_per_role: u32,
}

impl Estate {
    fn services(&self) -> u32 {
        self.projects * self.regions.len() as u32 * self.per_region
    }

    fn world_yaml(&self, faults: &str) -> String {
        format!(
            "generate:\n  seed: 1\n  projects: {}\n  regions: [{}]\n  servicesPerRegion: {}\n  servicesPerTeam: {}\n  users: {}\n  roles: {}\n  usersPerRole: {}\n  publicFraction: 0.1\n{}",
            self.projects,
            self.regions.join(", "),
            self.per_region,
            self.per_team,
            self.users,
            self.roles,
            self.users_per_role,
            faults
        )
    }

    /// One policy per team (all services governed), each naming one role (cycling).
    fn desired(&self) -> Desired {
        let projects: Vec<String> = (1..=self.projects)
            .map(|p| format!("gen-project-{p}"))
            .collect();
        let project_refs: Vec<&str> = projects.iter().map(String::as_str).collect();
        let settings = settings(
            "gen.auth0.example",
            "gen",
            &project_refs,
            &self.regions,
            &["gen.example"],
        );
        let per_project = self.regions.len() as u32 * self.per_region;
        let teams = self.services().div_ceil(self.per_team);
        let policies = (0..teams)
            .map(|t| {
                // A team's services are consecutive in (project, region, number) order; teams
                // never straddle projects here because per_project is a multiple of per_team.
                let project = format!("gen-project-{}", t * self.per_team / per_project + 1);
                let team = format!("team-{t:02}");
                let role = format!("role-{:03}", t % self.roles + 1);
                policy(
                    &format!("p-{team}"),
                    vec![selector(&project, None, &[("team", &team)])],
                    None,
                    vec![support::role(&role)],
                )
            })
            .collect();
        Desired { settings, policies }
    }

    /// Calls a perfect reader makes: (Google, Auth0), tokens included, but not the one
    /// `GET /users/{id}` per distinct member (see [`user_reads`]).
    fn expected_calls(&self, page_size: u32) -> (usize, usize) {
        let listings = self.projects as usize * self.regions.len();
        let list_pages = listings * (self.per_region.div_ceil(page_size).max(1) as usize);
        let google = 1 + list_pages + self.services() as usize + self.projects as usize;
        let roles_used = self.roles.min(self.services().div_ceil(self.per_team)) as usize;
        let via_group = (self.users_per_role / 4) as usize;
        let direct = self.users_per_role as usize - via_group;
        let per_role = direct.div_ceil(100).max(1)
            + 1
            + if via_group > 0 {
                via_group.div_ceil(100)
            } else {
                0
            };
        // token + role pages + per role (users, groups, group members); each distinct member
        // is then read once by id (README "Auth0: what runwarden reads").
        let auth0 = 1 + (self.roles as usize).div_ceil(100) + roles_used * per_role;
        (google, auth0)
    }
}

/// `GET /api/v2/users/{id}` calls in a log: (calls not answered 429, distinct users among them).
/// A perfect reader reads each distinct member exactly once per pass.
fn user_reads(log: &[runwarden::sim::RequestRecord]) -> (usize, usize) {
    let reads: Vec<&str> = log
        .iter()
        .filter(|r| r.status != 429 && r.path.starts_with("/api/v2/users/"))
        .map(|r| r.path.as_str())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = reads.iter().copied().collect();
    (reads.len(), distinct.len())
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Timed {
    name: &'static str,
    latency: Duration,
    quota: Rate,
    auth0_quota: Rate,
}

async fn timed(estate: &Estate, t: &Timed) -> bool {
    let faults = format!(
        "faults:\n  latency: {}ms\n  rateLimits: {{cloudRunRead: {}, auth0: {}}}\n",
        t.latency.as_millis(),
        t.quota,
        t.auth0_quota
    );
    let desired = estate.desired();
    let mut config = ClientConfig::default();
    config.google.concurrency = 16;
    // Pace at the quota (a hair under it): the simulator enforces it as a steady rate.
    config.google.cloud_run_read_rate = Pace::Limit(t.quota.scaled(0.99));
    // One pacer for all regions at the quota of one region (the simulator counts per region:
    // the bound below is that of one region's quota, which this client cannot beat).
    config.google.cloud_run_rate_per_region = false;
    config.google.resource_manager_rate = Pace::Off;
    config.google.iap_rate = Pace::Off;
    config.auth0_rate = Pace::Limit(t.auth0_quota.scaled(0.95));
    let page_size = config.google.list_page_size.unwrap_or(100);
    let setup = start(
        world(&estate.world_yaml(&faults)),
        &desired.settings,
        &config,
    )
    .await;

    let started = Instant::now();
    let (live, stats) = read_live_with_stats(&desired, &setup.clients, &ReadConfig::default())
        .await
        .expect("read");
    let wall = started.elapsed();

    let log = setup.sim.handle.request_log();
    let google_calls = log
        .iter()
        .filter(|r| r.path == "/token" || r.path.starts_with("/v"))
        .count();
    let auth0_calls = log
        .iter()
        .filter(|r| r.path == "/oauth/token" || r.path.starts_with("/api/v2/"))
        .count();
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let (want_google, want_auth0) = estate.expected_calls(page_size);
    let (_, users) = user_reads(&log);
    let want_auth0 = want_auth0 + users;

    // Lower bounds per API, run side by side: the pass cannot beat the slower of the two.
    let lat = t.latency.as_secs_f64();
    let google_bound = (google_calls as f64 * lat / config.google.concurrency as f64)
        .max(google_calls as f64 / t.quota.per_sec_f64());
    let auth0_bound = (auth0_calls as f64 * lat / config.auth0_concurrency as f64)
        .max(auth0_calls as f64 / t.auth0_quota.per_sec_f64());
    let bound = google_bound.max(auth0_bound);
    let ratio = wall.as_secs_f64() / bound;
    let governed_ok = stats.governed == estate.services() as usize
        && live
            .services
            .values()
            .all(|s| s.iam.is_some() && s.read_error.is_none());
    let exact = google_calls == want_google && auth0_calls == want_auth0;

    println!(
        "scenario {}: {} governed services, latency {:?}, Cloud Run read quota {}, Auth0 quota {}",
        t.name,
        estate.services(),
        t.latency,
        t.quota,
        t.auth0_quota
    );
    println!(
        "  calls made:      {google_calls} Google + {auth0_calls} Auth0 (429 answers: {throttled})"
    );
    println!(
        "  calls expected:  {want_google} Google + {want_auth0} Auth0 -> unnecessary calls: {}",
        (google_calls + auth0_calls) as i64 - (want_google + want_auth0) as i64
    );
    println!("  wall time:       {:.2} s", wall.as_secs_f64());
    println!(
        "  lower bound:     {bound:.2} s (Google {google_bound:.2} s, Auth0 {auth0_bound:.2} s)"
    );
    println!(
        "  ratio:           {ratio:.3} (target <= 1.25) {}",
        if ratio <= 1.25 { "ok" } else { "OVER" }
    );
    println!("  all governed read: {governed_ok}; exact call count: {exact}");
    // Effective access (issue 18), after the timed read: per project one policy and one
    // projects.get (its parent) unless the read already got it with the number; per folder one folders.get; per folder or organization one
    // policy; one role read per distinct role; nothing else.
    let before = setup.sim.handle.request_log().len();
    let facts = runwarden::live::read_access(&setup.clients.google, &live).await;
    let added = setup.sim.handle.request_log().len() - before;
    let folders = facts.ancestors.keys().filter(|a| a.starts_with("folders/")).count();
    let parents = facts.projects.keys().filter(|p| !live.project_parents.contains_key(*p)).count();
    let want_access = facts.projects.len() + parents + folders + facts.ancestors.len() + facts.invoking.len();
    println!(
        "  effective access: {added} more calls (expected {want_access}: {} project policies + {parents} project parents not read with the numbers + {folders} folder parents + {} folder/organization policies + {} roles)",
        facts.projects.len(),
        facts.ancestors.len(),
        facts.invoking.len()
    );
    ratio <= 1.25 && exact && governed_ok && throttled == 0 && added == want_access
}

/// A scenario run with the clients' defaults (no client rate configured).
struct Learning {
    name: &'static str,
    latency: Duration,
    /// Cloud Run read quota per region, as the simulator enforces it.
    quota: Rate,
    /// `faults.rateLimits.auth0`, or the plan (`auth0Tier`) when `None`.
    auth0_quota: Option<Rate>,
    auth0_tier: Option<&'static str>,
    /// Readers at once against the one simulator (sharing its quota).
    readers: usize,
    /// Ratio target.
    target: f64,
}

/// What the simulator's request log says about the calls of a scenario.
struct Tally {
    google: usize,
    auth0: usize,
    throttled: usize,
    throttled_google: usize,
}

fn tally(log: &[runwarden::sim::RequestRecord]) -> Tally {
    Tally {
        google: log.iter().filter(|r| r.path == "/token" || r.path.starts_with("/v")).count(),
        auth0: log.iter().filter(|r| r.path == "/oauth/token" || r.path.starts_with("/api/v2/")).count(),
        throttled: log.iter().filter(|r| r.status == 429).count(),
        throttled_google: log.iter().filter(|r| r.status == 429 && r.path.starts_with("/v")).count(),
    }
}

async fn learning(estate: &Estate, t: &Learning) -> bool {
    let auth0 = match (t.auth0_quota, t.auth0_tier) {
        (Some(q), _) => format!(", auth0: {q}}}"),
        (None, Some(tier)) => format!("}}\n  auth0Tier: {tier}"),
        (None, None) => "}".into(),
    };
    let faults = format!(
        "faults:\n  latency: {}ms\n  rateLimits: {{cloudRunRead: {}{auth0}\n",
        t.latency.as_millis(),
        t.quota
    );
    let desired = estate.desired();
    let config = ClientConfig::default();
    let setup = start(world(&estate.world_yaml(&faults)), &desired.settings, &config).await;
    let mut readers = vec![setup.clients.clone()];
    let mut dirs = Vec::new();
    for _ in 1..t.readers {
        let dir = tempfile::tempdir().unwrap();
        readers.push(
            runwarden::cmd::embedded::clients_for_sim(&setup.sim, &desired.settings, dir.path(), &config)
                .expect("clients"),
        );
        dirs.push(dir);
    }
    let started = Instant::now();
    let read_config = ReadConfig::default();
    let reads = readers.iter().map(|clients| read_live_with_stats(&desired, clients, &read_config));
    let results = futures_util::future::join_all(reads).await;
    let wall = started.elapsed();
    let failures: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    let governed_ok = results.iter().all(|r| {
        r.as_ref().is_ok_and(|(live, stats)| {
            stats.governed == estate.services() as usize
                && live.services.values().all(|s| s.iam.is_some() && s.read_error.is_none())
        })
    });
    let n = tally(&setup.sim.handle.request_log());
    let (want_google, want_auth0) = estate.expected_calls(500);
    // Each reader also reads the quotas once (run and iap consumerQuotaMetrics), and each
    // distinct member once.
    let (_, users) = user_reads(&setup.sim.handle.request_log());
    let want = t.readers * (want_google + 2 + want_auth0 + users);
    let calls = n.google + n.auth0;
    let unnecessary = calls as i64 - n.throttled as i64 - want as i64;
    let regions = estate.regions.len() as f64;
    let lat = t.latency.as_secs_f64();
    // Answered calls only: a 429 spent no quota (and counts against the throttled share).
    let google_ok = n.google.saturating_sub(n.throttled_google);
    let google_bound = (google_ok as f64 * lat / config.google.concurrency as f64)
        .max(google_ok as f64 / (t.quota.per_sec_f64() * regions));
    let auth0_rate = t.auth0_quota.map_or_else(|| if t.auth0_tier == Some("free") { 2.0 } else { 1000.0 }, |q| q.per_sec_f64());
    let auth0_ok = n.auth0.saturating_sub(n.throttled - n.throttled_google);
    let auth0_bound = (auth0_ok as f64 * lat / config.auth0_concurrency as f64).max(auth0_ok as f64 / auth0_rate);
    let bound = google_bound.max(auth0_bound);
    let ratio = wall.as_secs_f64() / bound;
    let share = n.throttled as f64 / calls.max(1) as f64;
    println!(
        "scenario {}: {} reader(s), {} governed services each, latency {:?}, Cloud Run read quota {} per region × {} regions, Auth0 {}; no client rate configured",
        t.name, t.readers, estate.services(), t.latency, t.quota, estate.regions.len(),
        t.auth0_quota.map_or_else(|| format!("plan {}", t.auth0_tier.unwrap_or("-")), |q| q.to_string())
    );
    println!("  calls made:      {} Google + {} Auth0; throttled (429): {} ({:.1} %, target <= 5 %)", n.google, n.auth0, n.throttled, share * 100.0);
    println!("  calls expected:  {want} (quota reads included) -> unnecessary calls: {unnecessary}");
    println!("  wall time:       {:.2} s", wall.as_secs_f64());
    println!("  lower bound:     {bound:.2} s (Google {google_bound:.2} s, Auth0 {auth0_bound:.2} s)");
    println!("  ratio:           {ratio:.3} (target <= {}) {}", t.target, if ratio <= t.target { "ok" } else { "OVER" });
    println!("  all governed read: {governed_ok}; failures: {failures:?}");
    drop(dirs);
    ratio <= t.target && share <= 0.05 && unnecessary == 0 && governed_ok
}

/// A pass whose plan changes every governed service, with the defaults and a write quota.
async fn apply_at_scale(estate: &Estate) -> bool {
    let write_quota = Rate::per_second(50);
    let latency = Duration::from_millis(20);
    let faults = format!(
        "faults:\n  latency: {}ms\n  rateLimits: {{cloudRunRead: 200/s, cloudRunWrite: {write_quota}, auth0: 50/s}}\n",
        latency.as_millis()
    );
    let desired = estate.desired();
    let config = ClientConfig::default();
    let setup = start(world(&estate.world_yaml(&faults)), &desired.settings, &config).await;
    let (live, _) = read_live_with_stats(&desired, &setup.clients, &ReadConfig::default()).await.expect("read");
    let plan = runwarden::plan::plan(&desired, &live, &runwarden::plan::PlanOptions::at(std::time::SystemTime::now()));
    let before = setup.sim.handle.request_log().len();
    let apply_config = runwarden::apply::ApplyConfig { allow_removals: Some(usize::MAX), ..Default::default() };
    let audit = runwarden::apply::AuditContext { revision: "bench".into(), actor: "serviceAccount:bench@sim".into() };
    let sink = runwarden::apply::AuditSink::discard();
    let progress = runwarden::progress::Progress::hidden();
    let applier = runwarden::apply::Applier {
        google: &setup.clients.google,
        settings: &desired.settings,
        config: &apply_config,
        source: runwarden::apply::PlanSource::Fresh { desired: &desired, live: &live, now: std::time::SystemTime::now() },
        audit: &audit,
        sink: &sink,
        shutdown: tokio_util::sync::CancellationToken::new(),
        progress: &progress,
    };
    let started = Instant::now();
    let report = runwarden::apply::apply(&plan, &applier).await;
    let wall = started.elapsed();
    let log = setup.sim.handle.request_log();
    let log = &log[before..];
    let is_write = |r: &&runwarden::sim::RequestRecord| {
        !r.path.contains("/iap_web/") && (r.method == "PATCH" || r.path.ends_with(":setIamPolicy"))
    };
    let writes = log.iter().filter(is_write).count();
    let calls = log.len();
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let regions = estate.regions.len() as f64;
    let bound = (calls as f64 * latency.as_secs_f64() / apply_config.concurrency as f64)
        .max(writes as f64 / (write_quota.per_sec_f64() * regions));
    let ratio = wall.as_secs_f64() / bound;
    let changed = plan.services.len();
    println!(
        "scenario apply-at-scale: {changed} services to change, Cloud Run write quota {write_quota} per region × {} regions, latency {latency:?}; no client rate configured",
        estate.regions.len()
    );
    println!("  calls made:      {calls} ({writes} Cloud Run writes); throttled (429): {throttled}");
    println!("  report:          {}", report.summary_line());
    println!("  wall time:       {:.2} s", wall.as_secs_f64());
    println!("  lower bound:     {bound:.2} s (max(calls × latency / {} services at once, writes / write quota))", apply_config.concurrency);
    println!("  ratio:           {ratio:.3} (target <= 1.25) {}", if ratio <= 1.25 { "ok" } else { "OVER" });
    ratio <= 1.25 && throttled * 20 <= calls && report.failures().count() == 0
}

async fn memory() {
    let estate = Estate {
        projects: 10,
        regions: vec!["europe-west1", "us-central1"],
        per_region: 500,
        per_team: 20,
        users: 50_000,
        roles: 200,
        users_per_role: 250,
    };
    let desired = estate.desired();
    let mut config = test_client_config();
    config.google.concurrency = 32;
    let setup = start(world(&estate.world_yaml("")), &desired.settings, &config).await;
    let rss_before = vm_rss_kib().unwrap_or(0);
    let started = Instant::now();
    let (live, stats) = read_live_with_stats(&desired, &setup.clients, &ReadConfig::default())
        .await
        .expect("read");
    let wall = started.elapsed();
    let hwm = vm_hwm_kib().unwrap_or(0);
    let users: usize = live.directory.roles.values().map(|r| r.members.len()).sum();
    println!(
        "scenario memory: {} services ({} governed), {} Auth0 users, {} role memberships read in {:.2} s",
        live.services.len(),
        stats.governed,
        estate.users,
        users,
        wall.as_secs_f64()
    );
    println!(
        "  resident before the read (simulator loaded): {:.1} MiB",
        rss_before as f64 / 1024.0
    );
    println!(
        "  peak resident (VmHWM, simulator included):   {:.1} MiB",
        hwm as f64 / 1024.0
    );
    println!(
        "  peak minus simulator baseline:              {:.1} MiB (target < 150 MB)",
        hwm.saturating_sub(rss_before) as f64 / 1024.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("RUNWARDEN_BENCH_MEMORY").is_some() {
        runtime.block_on(memory());
        return;
    }
    // 2,000 services; a directory of 20 roles of 10 members (about 200 distinct users): every
    // member is read by id (one call each), so at 50/s the directory read takes about as long
    // as the Cloud Run reads at 200/s per region, and the free plan's 2/s stays within minutes.
    let estate = Estate {
        projects: 2,
        regions: vec!["europe-west1", "us-central1"],
        per_region: 500,
        per_team: 20,
        users: 1_000,
        roles: 20,
        users_per_role: 10,
    };
    // `RUNWARDEN_BENCH_ONLY=A,B` runs only the scenarios whose name contains A or B.
    let only = std::env::var("RUNWARDEN_BENCH_ONLY").ok();
    let run = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|part| name.contains(part)));
    let mut ok = true;
    for t in [
        Timed {
            name: "quota-bound",
            latency: Duration::from_millis(20),
            quota: Rate::per_minute(6000),
            auth0_quota: Rate::per_second(50),
        },
        Timed {
            name: "latency-bound",
            latency: Duration::from_millis(20),
            quota: Rate::per_minute(60000),
            auth0_quota: Rate::per_second(50),
        },
    ] {
        if run(t.name) {
            ok &= runtime.block_on(timed(&estate, &t));
        }
    }
    let ms20 = Duration::from_millis(20);
    for t in [
        Learning { name: "a-defaults", latency: ms20, quota: Rate::per_second(200), auth0_quota: Some(Rate::per_second(50)), auth0_tier: None, readers: 1, target: 1.25 },
        Learning { name: "b-defaults-10x-lower", latency: ms20, quota: Rate::per_second(20), auth0_quota: Some(Rate::per_second(5)), auth0_tier: None, readers: 1, target: 1.25 },
        Learning { name: "c-defaults-shared", latency: ms20, quota: Rate::per_second(200), auth0_quota: Some(Rate::per_second(50)), auth0_tier: None, readers: 2, target: 1.5 },
        Learning { name: "d-defaults-auth0-free", latency: ms20, quota: Rate::per_second(200), auth0_quota: None, auth0_tier: Some("free"), readers: 1, target: f64::INFINITY },
    ] {
        if run(t.name) {
            ok &= runtime.block_on(learning(&estate, &t));
        }
    }
    if run("apply-at-scale") {
        ok &= runtime.block_on(apply_at_scale(&estate));
    }
    if only.is_some() {
        println!("{}", if ok { "selected scenarios: all targets met" } else { "selected scenarios: some target missed" });
        return;
    }
    // The memory scenario runs in a child process so its VmHWM is its own.
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .env("RUNWARDEN_BENCH_MEMORY", "1")
        .status()
        .unwrap();
    ok &= status.success();
    println!(
        "{}",
        if ok {
            "read benchmark: all targets met"
        } else {
            "read benchmark: some target missed"
        }
    );
}
