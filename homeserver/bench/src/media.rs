//! The media run: a 100 MB upload and download over loopback (throughput, the content checked
//! byte for byte, the server's resident memory sampled every 5 ms throughout, to show the file
//! is streamed and never held whole), and thumbnail generation of a 12-megapixel JPEG (the
//! first request renders and stores it; the median of 20 more reads it back).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::client::{Server, User};

pub struct MediaRun {
    pub megabytes: f64,
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    /// Server RSS before the transfers and its peak during them (KiB).
    pub rss_before_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub thumbnail_first_ms: f64,
    pub thumbnail_stored_ms: f64,
}

/// Samples the server's RSS until dropped; the peak seen.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(server: &Arc<Server>) -> RssSampler {
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (server, p, s) = (server.clone(), peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = server.rss_kib() {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        RssSampler { peak, stop }
    }

    fn peak(&self) -> Option<u64> {
        Some(self.peak.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn upload(server: &Server, user: &User, content_type: &str, data: Vec<u8>) -> Result<String> {
    let answer = server
        .http
        .post(format!("{}/_matrix/media/v3/upload", server.base))
        .bearer_auth(&user.token)
        .header("content-type", content_type)
        .body(data)
        .send()
        .await?;
    ensure!(answer.status().is_success(), "upload answered {}", answer.status());
    let body: Value = answer.json().await?;
    let mxc = body["content_uri"].as_str().context("no content_uri")?;
    Ok(mxc.trim_start_matches("mxc://").to_owned())
}

pub async fn media(server: &Arc<Server>, run: u32, megabytes: usize) -> Result<MediaRun> {
    let user = server.register(&format!("bench{run}media")).await?;
    let data: Vec<u8> =
        (0..megabytes * 1_000_000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let rss_before_kib = server.rss_kib();
    let sampler = RssSampler::start(server);

    let started = Instant::now();
    let path = upload(server, &user, "video/mp4", data.clone()).await?;
    let upload_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut answer = server
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{path}", server.base))
        .bearer_auth(&user.token)
        .send()
        .await?;
    ensure!(answer.status().is_success(), "download answered {}", answer.status());
    let mut offset = 0;
    while let Some(chunk) = answer.chunk().await? {
        ensure!(
            data.get(offset..offset + chunk.len()) == Some(&chunk[..]),
            "the download differs at {offset}"
        );
        offset += chunk.len();
    }
    ensure!(offset == data.len(), "the download is {offset} bytes, not {}", data.len());
    let download_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rss_peak_kib = sampler.peak();
    drop(sampler);

    // A 4000x3000 photo-sized JPEG.
    let photo = image::RgbImage::from_fn(4000, 3000, |x, y| {
        image::Rgb([(x / 16) as u8, (y / 12) as u8, ((x + y) / 28) as u8])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(photo).write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
    let path = upload(server, &user, "image/jpeg", jpeg.into_inner()).await?;
    let thumbnail = || async {
        let started = Instant::now();
        let answer = server
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/thumbnail/{path}?width=320&height=240&method=scale",
                server.base
            ))
            .bearer_auth(&user.token)
            .send()
            .await?;
        ensure!(answer.status().is_success(), "thumbnail answered {}", answer.status());
        let _ = answer.bytes().await?;
        Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64() * 1000.0)
    };
    let thumbnail_first_ms = thumbnail().await?;
    let mut stored = Vec::new();
    for _ in 0..20 {
        stored.push(thumbnail().await?);
    }
    stored.sort_by(f64::total_cmp);
    let thumbnail_stored_ms = stored[stored.len() / 2];

    let mb = data.len() as f64 / 1_000_000.0;
    Ok(MediaRun {
        megabytes: mb,
        upload_mb_s: mb / upload_s,
        download_mb_s: mb / download_s,
        rss_before_kib,
        rss_peak_kib,
        thumbnail_first_ms,
        thumbnail_stored_ms,
    })
}
