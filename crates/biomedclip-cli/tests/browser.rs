//! The web page in a real browser: Debian's `chromium` driven headless through
//! `chromedriver` (WebDriver, via fantoccini). A fixture image is uploaded, labels entered,
//! and the ranking the page shows must equal `biomedclip classify --json`'s; then the search
//! tab queries a collection and must show `biomedclip search --json`'s results, with their
//! images.
//!
//! Needs `chromium` and `chromium-driver`; without them the test says so and passes, unless
//! `BIOMEDCLIP_REQUIRE_BROWSER=1` (set by CI) makes it fail. `BIOMEDCLIP_SCREENSHOT=PATH`
//! saves a screenshot of the page with its results (`docs/serve-page.png` is one, taken with
//! `BIOMEDCLIP_TEST_MODEL` set to a full-size checkpoint).

mod serving;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use serving::*;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        Command::new("which")
            .arg(n)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
}

#[test]
fn the_page_ranks_labels_as_the_cli_does() {
    let required = std::env::var_os("BIOMEDCLIP_REQUIRE_BROWSER").is_some();
    let (Some(driver), Some(browser)) = (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        assert!(
            !required,
            "chromium and chromedriver are required (BIOMEDCLIP_REQUIRE_BROWSER)"
        );
        eprintln!("SKIPPED: chromium or chromedriver not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let collection = tempfile::tempdir().unwrap();
    let built = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args(["index", "build", "--model", &tiny_model(), "--out"])
        .arg(collection.path())
        .arg(fixtures().join("images"))
        .output()
        .unwrap();
    // One fixture is deliberately not an image; the rest are in.
    assert!(
        String::from_utf8_lossy(&built.stderr).contains("rows"),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let query = "hematoxylin and eosin histopathology";
    let searched = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args([
            "search",
            "--json",
            "--top-k",
            "6",
            "--model",
            &tiny_model(),
            "--text",
            query,
        ])
        .arg(collection.path())
        .output()
        .unwrap();
    assert!(searched.status.success());
    let want_hits: serde_json::Value = serde_json::from_slice(&searched.stdout).unwrap();
    let spec = format!("demo={}", collection.path().display());
    let server = Server::start(&["--collection", &spec]);
    let port = free_port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let labels = [
        "chest X-ray",
        "brain MRI",
        "immunohistochemistry histopathology",
    ];
    // WebDriver takes only canonical paths for uploads.
    let picture = image("ihc.jpg").canonicalize().unwrap();
    let want = &cli_classify(std::slice::from_ref(&picture), &labels)[0];

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shown = runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start the browser: {e}"),
            }
        };
        client.goto(&server.url).await.unwrap();
        let notice = client.find(Locator::Id("notice")).await.unwrap();
        assert!(notice
            .text()
            .await
            .unwrap()
            .contains("not for clinical use"));
        // The file input is hidden behind the drop zone; WebDriver types into it directly.
        client
            .execute("document.getElementById('files').hidden = false;", vec![])
            .await
            .unwrap();
        let input = client.find(Locator::Id("files")).await.unwrap();
        input.send_keys(picture.to_str().unwrap()).await.unwrap();
        let area = client.find(Locator::Id("labels")).await.unwrap();
        area.clear().await.unwrap();
        area.send_keys(&labels.join("\n")).await.unwrap();
        client
            .find(Locator::Id("classify"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let rows = client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(".result .score"))
            .await
            .map(|_| ());
        rows.unwrap();
        let mut shown = Vec::new();
        for row in client
            .find_all(Locator::Css(".result .score"))
            .await
            .unwrap()
        {
            let label = row.attr("data-label").await.unwrap().unwrap();
            let p: f32 = row
                .attr("data-probability")
                .await
                .unwrap()
                .unwrap()
                .parse()
                .unwrap();
            shown.push((label, p));
        }
        let preview = client
            .find(Locator::Css(".result img"))
            .await
            .unwrap()
            .attr("src")
            .await
            .unwrap()
            .unwrap();
        assert!(preview.starts_with("data:image/png;base64,"));
        if let Some(path) = std::env::var_os("BIOMEDCLIP_SCREENSHOT") {
            client
                .execute("document.getElementById('files').hidden = true;", vec![])
                .await
                .unwrap();
            std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
        }

        // The search tab.
        client.find(Locator::Id("tab-search")).await.unwrap().click().await.unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("#collection option"))
            .await
            .unwrap();
        client.find(Locator::Id("query")).await.unwrap().send_keys(query).await.unwrap();
        let top = client.find(Locator::Id("top-k")).await.unwrap();
        top.clear().await.unwrap();
        top.send_keys("6").await.unwrap();
        client.find(Locator::Id("search")).await.unwrap().click().await.unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(".hit"))
            .await
            .unwrap();
        let mut hits = Vec::new();
        for card in client.find_all(Locator::Css(".hit")).await.unwrap() {
            let id: u64 = card.attr("data-id").await.unwrap().unwrap().parse().unwrap();
            let score: f64 = card.attr("data-score").await.unwrap().unwrap().parse().unwrap();
            hits.push((id, score));
        }
        // Every thumbnail arrives (fetched with the page's headers, shown as a blob).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let loaded = client
                .execute(
                    "return Array.from(document.querySelectorAll('.hit img')).filter(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0).length;",
                    vec![],
                )
                .await
                .unwrap();
            if loaded.as_u64() == Some(hits.len() as u64) {
                break;
            }
            assert!(Instant::now() < deadline, "thumbnails did not load: {loaded}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(path) = std::env::var_os("BIOMEDCLIP_SEARCH_SCREENSHOT") {
            std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
        }
        client.close().await.unwrap();
        let want: Vec<(u64, f64)> = want_hits["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_u64().unwrap(), r["score"].as_f64().unwrap()))
            .collect();
        assert_eq!(hits.len(), want.len());
        for (got, want) in hits.iter().zip(&want) {
            assert_eq!(got.0, want.0, "search results differ: {hits:?} vs {want:?}");
            assert!((got.1 - want.1).abs() <= 1e-6, "{got:?} vs {want:?}");
        }
        shown
    });
    assert_eq!(shown.len(), want.len());
    for (got, want) in shown.iter().zip(want) {
        assert_eq!(got.0, want.0, "ranking differs: {shown:?} vs {want:?}");
        assert!((got.1 - want.1).abs() <= 1e-6, "{got:?} vs {want:?}");
    }
}
