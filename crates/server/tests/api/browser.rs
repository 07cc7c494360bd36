//! A real browser on the dashboard: Debian's chromium, headless, driven through
//! chromedriver (WebDriver). `.ci/run` installs both when missing; without them this
//! test fails and says how to get them.
//!
//! Screenshots of each view are written to a temp dir, or to `docs/dashboard/` when
//! `REFACT_UPDATE_SCREENSHOTS=1` (how the ones in the docs were made).

use crate::helpers::{spawn_app, Db, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one thing may take to appear.
const PATIENCE: Duration = Duration::from_secs(60);

/// A chromedriver child process on a free port, killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // In a process group of its own, so that the browsers it starts go with it
        // even when a failing test never closes its session.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): the browser tests need Debian's \
                     chromium and chromium-driver (apt-get install chromium chromium-driver; \
                     .ci/run installs them)"
                )
            });
        let driver = ChromeDriver { child, port };
        let status = format!("http://127.0.0.1:{port}/status");
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(&status).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn browser(&self, width: u32, height: u32) -> Client {
        let mut capabilities = serde_json::Map::new();
        // The console, read back through chromedriver's log endpoint (see `console`).
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", format!("--window-size={width},{height}"),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

impl ChromeDriver {
    /// The browser console's warnings and errors since the last call (chromedriver's
    /// log endpoint drains what it returns), as "LEVEL message" lines.
    async fn console(&self, browser: &Client) -> Vec<String> {
        let session = browser.session_id().await.unwrap().expect("a session");
        let url = format!("http://127.0.0.1:{}/session/{session}/se/log", self.port);
        let answer: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"]
            .as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
            .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"]))
            .collect()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Polls `script` (JavaScript returning a value) until it returns something truthy.
async fn wait_for(browser: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = browser.execute(script, vec![]).await.expect(script);
        let truthy = !matches!(&value, Value::Null | Value::Bool(false))
            && value != json!("")
            && value != json!(0);
        if truthy {
            return value;
        }
        if Instant::now() > deadline {
            let errors = browser
                .execute("return window.dashboardErrors", vec![])
                .await
                .ok();
            let body = browser
                .execute("return document.body.innerText", vec![])
                .await
                .ok();
            panic!("timed out waiting for {what}; page errors {errors:?}; page: {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, once it contains `expected`.
async fn wait_for_text(browser: &Client, css: &str, expected: &str) -> String {
    let script = format!(
        "const el = document.querySelector({css:?}); \
         return el && el.innerText.includes({expected:?}) ? el.innerText : null;"
    );
    let found = wait_for(browser, &format!("{css} to contain {expected:?}"), &script).await;
    found.as_str().unwrap().to_string()
}

async fn fill(browser: &Client, css: &str, text: &str) {
    let input = browser.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    let script = format!("return document.querySelector({css:?}) !== null");
    wait_for(browser, css, &script).await;
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn open(browser: &Client, app: &TestApp, route: &str) {
    browser
        .goto(&app.url(&format!("/#/{route}")))
        .await
        .unwrap();
}

/// Waits until `count` images matching `css` have loaded (a decoded PNG).
async fn wait_for_images(browser: &Client, css: &str, count: usize) {
    let script = format!(
        "const imgs = [...document.querySelectorAll({css:?})]; \
         return imgs.length === {count} && imgs.every((i) => i.complete && i.naturalWidth > 0);"
    );
    wait_for(browser, &format!("{count} images {css}"), &script).await;
}

struct Screenshots(PathBuf);

impl Screenshots {
    fn new(temp: &tempfile::TempDir) -> Screenshots {
        let dir = if std::env::var_os("REFACT_UPDATE_SCREENSHOTS").is_some() {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard")
        } else {
            temp.path().to_path_buf()
        };
        std::fs::create_dir_all(&dir).unwrap();
        Screenshots(dir)
    }

    async fn take(&self, browser: &Client, name: &str) {
        browser
            .execute("window.scrollTo(0, 0)", vec![])
            .await
            .unwrap();
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

/// Opens the dashboard in a new tab, which asks for a token, and enters it.
async fn sign_in(browser: &Client, app: &TestApp) {
    open(browser, app, "versions").await;
    wait_for_text(browser, "#view-error", "enter a token").await;
    fill(browser, "#token", &app.token).await;
    click(browser, "#token-form button").await;
    wait_for(
        browser,
        "the timeline",
        "return document.querySelector('#version-0') !== null",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_takes_an_edit_from_the_form_to_promotion_revert_and_comparison() {
    // The background worker runs the edit, as in production: its progress reaches the
    // page over SSE.
    let app = spawn_app(Db::Sqlite, |s| s.replica_heartbeat_secs = 0.5).await;
    let temp = tempfile::tempdir().unwrap();
    let shots = Screenshots::new(&temp);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser(1200, 1500).await;

    // Auth is on: the page asks for a token once and keeps it for the tab. Until then
    // the console shows the refused calls, and only those.
    sign_in(&browser, &app).await;
    for line in driver.console(&browser).await {
        assert!(line.contains("401"), "before the token: {line}");
    }

    // An edit submitted in the form reaches `applied` on the page by itself.
    open(&browser, &app, "edits").await;
    wait_for(
        &browser,
        "the edit form",
        "return document.querySelector('#edit-form') !== null",
    )
    .await;
    // The layer range comes from /info's encoder_layers.
    wait_for_text(&browser, "#edit-form", "Layer (0–11, default 7)").await;
    fill(&browser, "#edit-form [name=prompt]", "The Prince of Wales").await;
    fill(&browser, "#edit-form [name=source]", "Prince Charles").await;
    fill(&browser, "#edit-form [name=target]", "Prince William").await;
    fill(&browser, "#edit-form [name=max_steps]", "12").await;
    click(&browser, "#edit-submit").await;
    wait_for_text(&browser, "#edit-msg", "queued").await;
    wait_for_text(&browser, "#edits tr:first-child .status", "applied").await;
    shots.take(&browser, "edits").await;
    let edit_id = app.get_json("/edits").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The versions view shows the new fact, live in v1.
    open(&browser, &app, "versions").await;
    let v1 = wait_for_text(&browser, "#version-1", "Prince William").await;
    assert!(
        v1.contains("+ The Prince of Wales: Prince Charles → Prince William"),
        "{v1}"
    );
    click(&browser, "#show-facts-1").await;
    wait_for_text(&browser, "#facts-1", "Facts live in v1: 1").await;

    // Promote it: the confirmation names the fact it brings, then the alias history
    // shows the move and who made it.
    click(&browser, "#promote-1").await;
    wait_for(
        &browser,
        "the alias field",
        "return document.querySelector('#promote-alias') !== null",
    )
    .await;
    click(&browser, "#confirm-ok").await;
    let changes = wait_for_text(&browser, "#promote-changes", "1 fact(s) added").await;
    assert!(
        changes.contains("+ The Prince of Wales: Prince Charles → Prince William"),
        "{changes}"
    );
    click(&browser, "#confirm-ok").await;
    wait_for_text(&browser, "#alias-production", "v1").await;
    let history = wait_for_text(&browser, "#alias-history", "created → v1").await;
    assert!(history.contains("test-admin"), "{history}");
    assert_eq!(app.get_json("/aliases/production").await["version"], 1);
    shots.take(&browser, "versions").await;

    // Revert it: the confirmation names the fact that goes; the new head holds none.
    click(&browser, "#revert-1").await;
    wait_for_text(&browser, "#revert-changes", "− The Prince of Wales").await;
    click(&browser, "#confirm-ok").await;
    let v2 = wait_for_text(&browser, "#version-2", "revert").await;
    assert!(
        v2.contains("− The Prince of Wales: Prince Charles → Prince William"),
        "{v2}"
    );
    click(&browser, "#show-facts-2").await;
    wait_for_text(&browser, "#facts-2", "Facts live in v2: 0").await;
    wait_for_text(&browser, "#version-1", "reverted by v2").await;

    // The edit's page: its curves from the stored progress, and before/after images.
    open(&browser, &app, &format!("edit/{edit_id}")).await;
    wait_for(
        &browser,
        "the curves",
        "return document.querySelectorAll('#curves polyline').length === 2",
    )
    .await;
    fill(&browser, "#render-form [name=steps]", "2").await;
    fill(&browser, "#render-form [name=size]", "64").await;
    click(&browser, "#render-before-after").await;
    wait_for_images(&browser, "#before-after img", 4).await;
    shots.take(&browser, "edit").await;

    // Compare: one prompt, versions 0 and 1, side by side.
    open(&browser, &app, "compare").await;
    wait_for(
        &browser,
        "the compare form",
        "return document.querySelector('#compare-form') !== null",
    )
    .await;
    fill(
        &browser,
        "#compare-form [name=prompts]",
        "a photo of the Prince of Wales",
    )
    .await;
    fill(&browser, "#compare-form [name=b]", "1").await;
    fill(&browser, "#compare-form [name=seeds]", "7").await;
    fill(&browser, "#compare-form [name=steps]", "2").await;
    fill(&browser, "#compare-form [name=size]", "64").await;
    click(&browser, "#compare-submit").await;
    wait_for_images(&browser, "#compare-grid img", 2).await;
    shots.take(&browser, "compare").await;

    // Generate: one image at the production alias, the form's sizes from the model.
    open(&browser, &app, "generate").await;
    let width = wait_for(
        &browser,
        "the generate form",
        "const w = document.querySelector('#gen-form [name=width]'); return w && w.value;",
    )
    .await;
    assert_eq!(width, json!("64"), "the model's default size, not 512");
    fill(
        &browser,
        "#gen-form [name=prompt]",
        "a photo of the Prince of Wales",
    )
    .await;
    fill(&browser, "#gen-form [name=steps]", "2").await;
    fill(&browser, "#gen-form [name=seed]", "3").await;
    click(&browser, "#gen-form button").await;
    wait_for_images(&browser, "#image", 1).await;
    wait_for_text(&browser, "#gen-msg", "version 1, seed 3").await;
    shots.take(&browser, "generate").await;

    // Operations: a long edit's progress moves on the page while it runs; this replica
    // by its heartbeat; both edits in the last hour once it is applied.
    let long = json!({
        "prompt": "The King of Spain", "source": "Felipe", "target": "Leonor",
        "hparams": {"max_steps": 400, "prob_threshold": 1.0},
    });
    app.submit_edit(&long).await;
    open(&browser, &app, "operations").await;
    let progress = "const el = document.querySelector('[id^=ops-progress-]'); \
                    return el && el.textContent.includes('iteration') ? el.textContent : null";
    let first = wait_for(&browser, "the running edit's progress", progress).await;
    let moved = format!(
        "const el = document.querySelector('[id^=ops-progress-]'); \
         return el !== null && el.textContent !== {first};"
    );
    wait_for(&browser, "the progress to move", &moved).await;
    wait_for_text(&browser, "#ops-replicas", "this").await;
    wait_for_text(&browser, "#ops-text-cache", "prompts kept").await;
    wait_for_text(&browser, "#ops-images-rendered", "since start").await;
    shots.take(&browser, "operations").await;
    let both_applied = "const t = document.querySelector('#ops-hour').textContent; \
                        return /edits applied \\(max [12]\\/min, total 2\\)/.test(t) ? t : null";
    let hour = wait_for(&browser, "both edits in the last hour", both_applied).await;
    assert!(
        hour.as_str()
            .unwrap()
            .contains("edits failed (max 1/min, total 0)"),
        "{hour}"
    );

    let errors = browser
        .execute("return window.dashboardErrors", vec![])
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "the page reported errors");
    let console = driver.console(&browser).await;
    assert!(console.is_empty(), "console errors: {console:#?}");
    browser.close().await.unwrap();

    // A narrow screen: no view is wider than the window.
    let phone = driver.browser(400, 900).await;
    sign_in(&phone, &app).await;
    wait_for(
        &phone,
        "v2 in the timeline",
        "return document.querySelector('#version-2') !== null",
    )
    .await;
    shots.take(&phone, "versions-narrow").await;
    for route in [
        "versions",
        "edits",
        "compare",
        "operations",
        &format!("edit/{edit_id}"),
    ] {
        open(&phone, &app, route).await;
        wait_for(
            &phone,
            route,
            "return document.querySelector('main section') !== null",
        )
        .await;
        let overflow = phone
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{route} overflows a 400 px screen by {overflow}"
        );
    }
    let errors = phone
        .execute("return window.dashboardErrors", vec![])
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "the page reported errors");
    let console = driver.console(&phone).await;
    assert!(
        console.iter().all(|l| l.contains("401")),
        "console errors: {console:#?}"
    );
    phone.close().await.unwrap();
}

/// On SDXL the page names the family, offers the text encoder to edit, sends the choice,
/// and draws each encoder's curves apart (legend "text", "text_2").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_edits_either_or_both_sdxl_encoders_and_draws_each_encoders_curves() {
    let app = spawn_app(Db::Sqlite, |s| {
        s.model = refact_testkit::fixture("tiny-sdxl").display().to_string();
    })
    .await;
    let driver = ChromeDriver::start().await;
    let browser = driver.browser(1200, 1500).await;
    sign_in(&browser, &app).await;
    wait_for_text(&browser, "#server-info", "(sdxl)").await;

    open(&browser, &app, "edits").await;
    let choices = wait_for(
        &browser,
        "the encoder choice",
        "const s = document.querySelector('#edit-form [name=encoder]'); \
         return s && [...s.options].map((o) => o.value);",
    )
    .await;
    assert_eq!(choices, json!(["", "text", "text_2"]));
    wait_for_text(
        &browser,
        "#edit-form",
        "text 0–10, default 7; text_2 0–10, default 7",
    )
    .await;
    let submit = |target: &'static str, encoder: &'static str| {
        let browser = browser.clone();
        async move {
            fill(&browser, "#edit-form [name=prompt]", "The Prince of Wales").await;
            fill(&browser, "#edit-form [name=source]", "Prince Charles").await;
            fill(&browser, "#edit-form [name=target]", target).await;
            fill(&browser, "#edit-form [name=max_steps]", "3").await;
            browser
                .execute(
                    "document.querySelector('#edit-form [name=encoder]').value = arguments[0]",
                    vec![json!(encoder)],
                )
                .await
                .unwrap();
            click(&browser, "#edit-submit").await;
            wait_for_text(&browser, "#edits tr:first-child .status", "applied").await;
        }
    };
    submit("Prince William", "").await;
    submit("Prince Harry", "text_2").await;
    let edits = app.get_json("/edits").await;
    let encoders: Vec<&Value> = edits["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["request"]["encoder"])
        .collect();
    assert_eq!(encoders, [&json!("text_2"), &json!("all")], "{edits}");

    // The edit of both encoders: a loss and a probability curve for each.
    let both = edits["items"][1]["id"].as_str().unwrap();
    open(&browser, &app, &format!("edit/{both}")).await;
    wait_for(
        &browser,
        "two curves per chart",
        "return document.querySelectorAll('#curves polyline').length === 4",
    )
    .await;
    let legend = wait_for_text(&browser, "#curves", "text_2").await;
    assert!(legend.contains("text"), "{legend}");

    let errors = browser
        .execute("return window.dashboardErrors", vec![])
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "the page reported errors");
    browser.close().await.unwrap();
}
