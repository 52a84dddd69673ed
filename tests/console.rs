//! The web console in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver, against a live three-node cluster (both from Debian's `chromium` and
//! `chromium-driver`, which scripts/test.sh installs).
//!
//! The page records its own errors (`window.onerror`, unhandled rejections, CSP
//! violations, `console.error`) in `window.slctErrors`; every check ends by asserting
//! that list is empty. A screenshot of each test's last page is left in the temporary
//! directory (`slct-console-*.png`), outside the repository.

mod support;

use std::net::TcpListener as StdListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slct::api::ApiConfig;
use slct::callbacks::CallbackConfig;
use support::{enc, eventually, Cluster};

/// An id that would run script if the console put it into the page as HTML.
const HOSTILE: &str =
    "<script>window.slctPwned=1</script><img src=x onerror=\"window.slctPwned=2\">";

/// How long the page may take to show what a check waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// chromedriver on an ephemeral port, killed with the browser it started on drop
/// (also when a check fails).
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that Drop ends Chromium with it.
            .process_group(0)
            .spawn()
            .expect("chromedriver from Debian's chromium-driver (scripts/test.sh installs it)");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        eventually(PATIENCE, "chromedriver to be ready", || async {
            let status = http.get(format!("{}/status", driver.url)).send().await;
            match status {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        driver
    }

    /// A new headless Chromium session.
    async fn browser(&self) -> Browser {
        let caps = json!({"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900"
        ]}});
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session (Debian's chromium package)");
        Browser(client)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child's process group; no memory is involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A WebDriver session.
struct Browser(Client);

impl Browser {
    async fn goto(&self, url: &str) {
        self.0.goto(url).await.expect("navigation");
    }

    async fn eval(&self, script: &str) -> Value {
        self.0.execute(script, vec![]).await.expect(script)
    }

    /// Waits until `script` (a function body) returns true.
    async fn until(&self, what: &str, script: &str) {
        eventually(PATIENCE, what, || async { self.eval(script).await == true }).await;
    }

    /// Clicks the element at `xpath` once it is on the page.
    async fn click(&self, xpath: &str) {
        let wait = self.0.wait().at_most(PATIENCE);
        let element = wait.for_element(Locator::XPath(xpath)).await.expect(xpath);
        element.click().await.expect(xpath);
    }

    /// Opens the page of state `id` and waits until it shows that state.
    async fn open_state(&self, base: &str, id: &str) {
        self.goto(&format!("{base}/#/state/{}", enc(id))).await;
        let shown = format!(
            "return document.querySelector('#view h2 .id')?.textContent === {};",
            json!(id)
        );
        self.until(&format!("the page of {id}"), &shown).await;
    }

    /// The page's own errors; none is expected.
    async fn assert_no_errors(&self) {
        let errors = self.eval("return window.slctErrors;").await;
        assert_eq!(errors, json!([]), "errors in the page");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.0.screenshot().await.expect("screenshot");
        let path = std::env::temp_dir().join(format!("slct-console-{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
    }

    async fn close(self) {
        self.0.close().await.expect("session closed");
    }
}

fn button(label: &str) -> String {
    format!("//button[normalize-space()='{label}']")
}

/// The row of channel `jobs` on the channels page.
const JOBS_ROW: &str = "//tr[td[normalize-space()='jobs']]";

async fn put_state(cluster: &Cluster, id: &str, body: Value) {
    let put = cluster
        .call(0, Method::PUT, &format!("/state/{}", enc(id)), Some(body))
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
}

async fn get_state(cluster: &Cluster, id: &str) -> Value {
    cluster
        .call(0, Method::GET, &format!("/state/{}", enc(id)), None)
        .await
        .body
}

fn waiting_on(chan: &str) -> Value {
    json!({"data": {"step": 1}, "selects": [{"id": "main", "cases": [{"op": "recv", "chan": chan}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_lists_shows_and_acts_on_states() {
    let cluster = Cluster::start_with(ApiConfig {
        callbacks: CallbackConfig {
            max_attempts: 1,
            ..CallbackConfig::default()
        },
        ..ApiConfig::default()
    })
    .await;
    put_state(&cluster, "order-1", waiting_on("payments/order-1")).await;
    put_state(&cluster, "order-10", waiting_on("payments/order-10")).await;
    let mut timed = waiting_on("payments/order-2");
    timed["selects"][0]["cases"]
        .as_array_mut()
        .expect("cases")
        .push(json!({"op": "timer", "after_ms": 3_600_000}));
    put_state(&cluster, "order-2", timed).await;
    // Enough events for two pages of history (20 a page).
    for _ in 0..12 {
        for action in ["pause", "resume"] {
            let path = format!("/state/order-2/{action}");
            assert_eq!(cluster.call(0, Method::POST, &path, None).await.status, 200);
        }
    }
    put_state(&cluster, HOSTILE, waiting_on(HOSTILE)).await;
    // A callback nobody answers (port 1 refuses) and one attempt: failed at once.
    let mut failing = waiting_on("never");
    failing["selects"][0]["cases"] = json!([{"op": "default"}]);
    failing["callback"] = json!({"url": "http://127.0.0.1:1/", "timeout_ms": 1000});
    put_state(&cluster, "job-failed", failing).await;
    eventually(PATIENCE, "job-failed to fail", || async {
        get_state(&cluster, "job-failed").await["status"] == "failed"
    })
    .await;
    let chan = cluster
        .call(0, Method::PUT, "/chan/jobs", Some(json!({"capacity": 2})))
        .await;
    assert_eq!(chan.status, StatusCode::CREATED);

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    // A follower serves the console too; its data requests go to the leader.
    let base = cluster.urls[cluster.follower()].clone();

    browser.goto(&format!("{base}/#/states")).await;
    browser
        .until(
            "the states listed",
            "return [...document.querySelectorAll('#view a.id')].length === 5;",
        )
        .await;
    let ids = browser
        .eval("return [...document.querySelectorAll('#view a.id')].map(a => a.textContent);")
        .await;
    assert_eq!(
        ids,
        json!([HOSTILE, "job-failed", "order-1", "order-2", "order-10"]),
        "ids in natural order"
    );
    states_list_columns(&browser).await;
    assert_hostile_inert(&browser).await;

    browser
        .0
        .find(Locator::LinkText(HOSTILE))
        .await
        .expect("the hostile id's link")
        .click()
        .await
        .expect("click");
    browser
        .until(
            "the hostile state's page",
            &format!(
                "return document.querySelector('#view h2 .id')?.textContent === {};",
                json!(HOSTILE)
            ),
        )
        .await;
    assert_hostile_inert(&browser).await;

    pause_and_resume(&cluster, &browser, &base).await;
    retry(&cluster, &browser, &base).await;
    state_page_cases_and_history(&browser, &base).await;
    channel_actions(&cluster, &browser, &base).await;

    browser.goto(&format!("{base}/#/cluster")).await;
    browser
        .until(
            "three members, one leader, two in sync",
            "const cells = [...document.querySelectorAll('#view tbody td')].map(td => td.textContent);
             return cells.filter(c => c === 'leader').length === 2 &&
                    cells.filter(c => c === 'in sync').length === 2;",
        )
        .await;
    browser
        .until(
            "this node's disk: free space and reserve",
            r"return [...document.querySelectorAll('#view dd')].some(dd =>
                 /^\d+\.\d MiB free, reserve \d+\.\d MiB$/.test(dd.textContent));",
        )
        .await;
    // The other follower stops: shown as unreachable, with when it was last heard.
    let gone = (0..3)
        .find(|i| *i != cluster.leader() && *i != cluster.follower())
        .expect("a third node");
    cluster.stop_node(gone).await;
    browser
        .until(
            "the stopped member shown unreachable",
            r"return [...document.querySelectorAll('#view tbody td')].some(td =>
                 /^unreachable, last heard \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \(/
                   .test(td.textContent));",
        )
        .await;
    browser.screenshot("cluster").await;

    browser.goto(&format!("{base}/#/metrics")).await;
    browser
        .until(
            "the metrics plotted from two samples or more",
            "return document.querySelectorAll('.plot svg polyline').length >= 10;",
        )
        .await;
    browser.screenshot("states").await;
    browser.assert_no_errors().await;
    browser.close().await;
}

/// The states list says what each state waits on, its attempts, last error and times
/// in UTC with a relative hint; without a token the token box is hidden.
async fn states_list_columns(browser: &Browser) {
    let rows = browser
        .eval(
            "return Object.fromEntries([...document.querySelectorAll('#view tbody tr')].map(tr =>
               [tr.querySelector('a.id').textContent, [...tr.children].map(td => td.textContent)]));",
        )
        .await;
    let row = |id: &str| rows[id].as_array().cloned().unwrap_or_default();
    let waits = |id: &str| row(id)[2].as_str().unwrap_or_default().to_owned();
    assert_eq!(waits("order-1"), "recv payments/order-1");
    assert!(
        waits("order-2").starts_with("recv payments/order-2 · timer in 59 min"),
        "{}",
        waits("order-2")
    );
    let failed = row("job-failed");
    assert_eq!(failed[3], "1", "one callback attempt: {failed:?}");
    assert!(
        !failed[4].as_str().unwrap_or_default().is_empty(),
        "last error: {failed:?}"
    );
    let updated = row("order-1")[7].as_str().unwrap_or_default().to_owned();
    let format = regex_like_time(&updated);
    assert!(format, "UTC time with a hint: {updated:?}");
    let login_hidden = browser
        .eval("return document.getElementById('login').checkVisibility() === false;")
        .await;
    assert_eq!(login_hidden, true, "no token box on a node without a token");
}

/// `YYYY-MM-DD hh:mm:ss.mmm UTC (…)`.
fn regex_like_time(text: &str) -> bool {
    let shape: String = text
        .chars()
        .take(27)
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    shape == "9999-99-99 99:99:99.999 UTC" && text[27..].starts_with(" (") && text.ends_with(')')
}

/// A state's selects and results are tables of cases, and its history is paged.
async fn state_page_cases_and_history(browser: &Browser, base: &str) {
    browser.open_state(base, "order-2").await;
    let cases = browser
        .eval("return [...document.querySelectorAll('#view td.case')].map(td => td.textContent);")
        .await;
    let cases: Vec<String> = serde_json::from_value(cases).expect("case texts");
    assert_eq!(cases.len(), 2, "{cases:?}");
    assert_eq!(cases[0], "recv payments/order-2");
    assert!(
        cases[1].starts_with("timer ") && regex_like_time(&cases[1][6..]),
        "{cases:?}"
    );
    let raw = browser
        .eval("return document.querySelectorAll('#view pre').length;")
        .await;
    assert_eq!(raw, json!(1), "only the data is raw JSON");
    let first_page = "return document.querySelectorAll('#view tbody tr').length;";
    browser
        .until(
            "a full page of history",
            "return [...document.querySelectorAll('#view a')].some(a => a.textContent === 'older →');",
        )
        .await;
    let rows_before = browser.eval(first_page).await;
    browser.click("//a[normalize-space()='older →']").await;
    browser
        .until(
            "the older page",
            "return location.hash.includes('before=') &&
                    [...document.querySelectorAll('#view a')].some(a => a.textContent === '← newer');",
        )
        .await;
    let seqs = browser
        .eval(
            "const rows = [...document.querySelectorAll('#view table')].pop().querySelectorAll('tbody tr');
             return [...rows].map(tr => Number(tr.children[0].textContent));",
        )
        .await;
    let seqs: Vec<u64> = serde_json::from_value(seqs).expect("seqs");
    assert!(
        !seqs.is_empty() && seqs[0] < 10,
        "older events: {seqs:?} ({rows_before})"
    );
    browser.assert_no_errors().await;
}

/// Send, try-receive and close from the channels page, each confirmed first.
async fn channel_actions(cluster: &Cluster, browser: &Browser, base: &str) {
    browser.goto(&format!("{base}/#/chans")).await;
    browser
        .until(
            "the channel listed",
            "return [...document.querySelectorAll('#view td')].some(td => td.textContent === 'jobs');",
        )
        .await;
    browser
        .eval("window.asked = []; window.confirm = (q) => { window.asked.push(q); return true; };")
        .await;
    let field = browser
        .0
        .find(Locator::XPath(&format!("{JOBS_ROW}//input")))
        .await
        .expect("the value field");
    field.send_keys("{\"n\": 1}").await.expect("typing");
    browser
        .click(&format!("{JOBS_ROW}{}", button("Send")))
        .await;
    let len = || async { cluster.call(0, Method::GET, "/chan/jobs", None).await.body["len"] == 1 };
    eventually(PATIENCE, "the value sent", len).await;
    browser
        .until(
            "the send noted",
            "return document.getElementById('notice').textContent.startsWith('Sent on jobs');",
        )
        .await;
    browser
        .click(&format!("{JOBS_ROW}{}", button("Receive")))
        .await;
    browser
        .until(
            "the value received",
            "return document.getElementById('notice').textContent === 'Received from jobs: {\"n\":1}';",
        )
        .await;
    browser
        .click(&format!("{JOBS_ROW}{}", button("Receive")))
        .await;
    browser
        .until(
            "nothing left",
            "return document.getElementById('notice').textContent === 'Nothing to receive on jobs now.';",
        )
        .await;
    browser
        .click(&format!("{JOBS_ROW}{}", button("Close")))
        .await;
    eventually(PATIENCE, "jobs closed", || async {
        cluster.call(0, Method::GET, "/chan/jobs", None).await.body["closed"] == true
    })
    .await;
    let asked = browser.eval("return window.asked.length;").await;
    assert_eq!(asked, json!(4), "every action confirmed first");
    browser.assert_no_errors().await;
}

/// The hostile id is on the page as text, and nothing in it ran or became an element.
async fn assert_hostile_inert(browser: &Browser) {
    let found = browser
        .eval(&format!(
            "return document.body.innerText.includes({});",
            json!(HOSTILE)
        ))
        .await;
    assert_eq!(found, true, "the id is shown as text");
    let injected = browser
        .eval("return [window.slctPwned ?? null, document.querySelectorAll('#view img, #view script').length];")
        .await;
    assert_eq!(injected, json!([null, 0]));
    browser.assert_no_errors().await;
}

async fn pause_and_resume(cluster: &Cluster, browser: &Browser, base: &str) {
    browser.open_state(base, "order-1").await;
    browser.click(&button("Pause")).await;
    eventually(PATIENCE, "order-1 paused", || async {
        get_state(cluster, "order-1").await["paused"] == true
    })
    .await;
    browser
        .until(
            "the Resume button",
            "return [...document.querySelectorAll('button')].some(b => b.textContent === 'Resume');",
        )
        .await;
    browser.click(&button("Resume")).await;
    eventually(PATIENCE, "order-1 resumed", || async {
        get_state(cluster, "order-1").await["paused"] == false
    })
    .await;
    browser.assert_no_errors().await;
}

async fn retry(cluster: &Cluster, browser: &Browser, base: &str) {
    browser.open_state(base, "job-failed").await;
    browser
        .until(
            "the last error shown",
            "return document.querySelector('#view dd .bad') !== null;",
        )
        .await;
    let attempts = browser
        .eval(
            "return [...document.querySelectorAll('#view dd')].map(dd => dd.textContent)
               .find(t => t.includes('since the last update'));",
        )
        .await;
    assert_eq!(attempts, json!("1 of 1 since the last update, gave up"));
    browser.click(&button("Retry")).await;
    eventually(PATIENCE, "job-failed retried", || async {
        let history = cluster
            .call(0, Method::GET, "/state/job-failed/history", None)
            .await;
        history.body["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event"] == "retried"))
    })
    .await;
    browser.assert_no_errors().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_token_the_console_is_open_and_its_data_needs_the_login() {
    let token = "console-test-token";
    let cluster = Cluster::start_with(ApiConfig {
        token: Some(token.into()),
        ..ApiConfig::default()
    })
    .await;
    let follower = cluster.follower();
    for path in ["/", "/ui/console.js", "/ui/metrics.js", "/ui/console.css"] {
        let page = cluster.call(follower, Method::GET, path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path} needs no token");
        let csp = &page.headers["content-security-policy"];
        assert!(csp.to_str().unwrap().contains("script-src 'self'"));
    }
    let missing = cluster
        .call(follower, Method::GET, "/ui/nope.js", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let data = cluster.call(follower, Method::GET, "/states", None).await;
    assert_eq!(data.status, StatusCode::UNAUTHORIZED);
    let put = cluster
        .http
        .put(format!("{}/state/secret-1", cluster.urls[0]))
        .bearer_auth(token)
        .json(&waiting_on("c"))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let base = &cluster.urls[follower];
    browser.goto(&format!("{base}/#/states")).await;
    browser
        .until(
            "the login prompt",
            "return document.getElementById('notice').textContent.includes('requires a token');",
        )
        .await;
    let field = browser.0.find(Locator::Id("token")).await.expect("field");
    field.send_keys(token).await.expect("typing");
    browser.click(&button("Sign in")).await;
    browser
        .until(
            "the state listed after login",
            "return [...document.querySelectorAll('#view a.id')].some(a => a.textContent === 'secret-1');",
        )
        .await;
    let kept = browser
        .eval("return sessionStorage.getItem('slct.token');")
        .await;
    assert_eq!(kept, json!(token));
    browser.screenshot("login").await;
    browser.assert_no_errors().await;
    browser.close().await;
}
