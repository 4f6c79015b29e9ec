//! The camera's configuration: `kodama.toml`, then environment variables,
//! then command-line flags (each overriding the one before).
//!
//! On the Pi the file lives on the FAT boot partition so a user can write it
//! from any computer. Unknown keys and bad values are errors that name the
//! field (`video.fps: must be 1..=60, got 0`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::video::VideoSettings;

pub use kodama_net::config::ConfigError;

/// Where the video comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoSourceKind {
    /// The OpenH264 test pattern: test equipment for the demo, the tests and
    /// the emulated boot (needs the `synthetic` build feature, which the
    /// shipping image does not have).
    Synthetic,
    /// IMX219 through libcamera + the hardware encoder (needs the `pi` build
    /// feature).
    Pi,
}

impl Default for VideoSourceKind {
    /// The camera: `pi` wherever the Pi drivers are built in. Only a build
    /// without them (a development machine) defaults to the test pattern.
    fn default() -> Self {
        if cfg!(feature = "pi") || !cfg!(feature = "synthetic") {
            VideoSourceKind::Pi
        } else {
            VideoSourceKind::Synthetic
        }
    }
}

impl VideoSourceKind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            VideoSourceKind::Synthetic => "synthetic",
            VideoSourceKind::Pi => "pi",
        }
    }

    /// Whether this build contains the source, with the reason if not.
    pub fn check_built_in(self) -> Result<(), String> {
        match self {
            VideoSourceKind::Pi if !cfg!(feature = "pi") => Err(format!(
                "\"pi\" needs a firmware built with the `pi` feature; this build has {}",
                Self::built_in()
            )),
            VideoSourceKind::Synthetic if !cfg!(feature = "synthetic") => Err(format!(
                "\"synthetic\" is test equipment and is not in this firmware (it is built only \
                 with the `synthetic` feature, for the demo and the emulated boot); this build has {}",
                Self::built_in()
            )),
            _ => Ok(()),
        }
    }

    /// The sources compiled into this build, for error messages.
    fn built_in() -> &'static str {
        match (cfg!(feature = "pi"), cfg!(feature = "synthetic")) {
            (true, true) => "\"pi\" and \"synthetic\"",
            (true, false) => "only \"pi\"",
            (false, true) => "only \"synthetic\"",
            (false, false) => "no video source (build with --features pi)",
        }
    }
}

/// `[camera]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSection {
    /// Name shown on the server; 1..=64 bytes.
    pub name: String,
    /// Secret key file (created on first start, mode 0600).
    pub key_path: PathBuf,
}

impl Default for CameraSection {
    fn default() -> Self {
        Self {
            name: "camera".into(),
            key_path: PathBuf::from("camera.key"),
        }
    }
}

/// `[server]`: whom to stream to. A ticket, or a node id plus addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Connection ticket printed by `kodama-server`.
    pub ticket: Option<String>,
    /// The server's node id.
    pub node_id: Option<String>,
    /// Direct socket addresses of the server (needed in offline mode).
    pub addrs: Vec<SocketAddr>,
    /// A pairing string from `kodama-server camera add NAME`: on first
    /// contact the camera redeems its one-time code, then connects as a
    /// camera (the server to dial comes from the string).
    pub pair: Option<String>,
}

/// `[system]`: what the camera may do to itself on an admin's command.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemSection {
    /// Program and arguments that reboot the camera (the image sets
    /// `["/sbin/reboot"]`); empty: reboot commands are answered "unsupported".
    pub reboot_command: Vec<String>,
    /// Program and arguments that (re)join Wi-Fi after a pairing QR code
    /// brought credentials (the image sets its network script's `wifi`).
    pub wifi_command: Vec<String>,
}

/// `[network]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// No relays, address lookup or port mapping: dial direct addresses only.
    pub offline: bool,
    /// Local socket address to bind (default: any).
    pub bind: Option<SocketAddr>,
    /// First reconnect delay in milliseconds.
    pub reconnect_initial_ms: Option<u64>,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: Option<u64>,
    /// Uplinks for failover, most preferred first (e.g. Wi-Fi, then
    /// cellular). Each keeps its own connection to the server through its
    /// interface; the camera streams over the best healthy one. Empty: one
    /// connection over whatever route the system picks.
    pub uplinks: Vec<UplinkSection>,
    /// Seconds a more preferred uplink must stay healthy before the camera
    /// moves back to it (cellular costs money; Wi-Fi that flaps is no better).
    pub return_after_s: Option<f64>,
    /// The uplink's congestion controller: `bbr3` (default; its bandwidth
    /// estimate lets adaptive bitrate step straight to the tier that fits)
    /// or `cubic`.
    pub congestion: CongestionKind,
}

/// `network.congestion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionKind {
    /// BBRv3.
    #[default]
    Bbr3,
    /// Cubic.
    Cubic,
}

impl CongestionKind {
    /// The transport's name for it.
    pub fn to_net(self) -> kodama_net::link::Congestion {
        match self {
            CongestionKind::Bbr3 => kodama_net::link::Congestion::Bbr3,
            CongestionKind::Cubic => kodama_net::link::Congestion::Cubic,
        }
    }
}

/// `[[network.uplinks]]`: one way out.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// Shown in logs and telemetry, e.g. `wifi`, `cell`.
    pub name: String,
    /// The network interface, e.g. `wlan0`, `wwan0`. Its IPv4 address is
    /// found at run time (DHCP); the image's network script routes traffic
    /// from that address out of this interface (`ip rule from ADDR`).
    pub interface: String,
}

/// `[video]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSection {
    /// `pi` (the default where built in) or `synthetic` (test builds only).
    pub source: VideoSourceKind,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Frames per GOP.
    pub keyframe_interval: u32,
    /// Adaptive bitrate: follow the link along the tier ladder (500 kbit/s
    /// to 4 Mbit/s), starting at and never above `bitrate_kbps`' rung.
    /// Off: a fixed `bitrate_kbps`.
    pub abr: bool,
    /// Synthetic source only: add grain so the encoder really produces the
    /// bitrate it is asked for (adaptive-bitrate tests and the demo).
    pub busy_scene: bool,
    /// Test equipment for the `synthetic` source only: a moving block held
    /// in front of the lens on a schedule, so the demo and the browser tests
    /// have motion events to show. `{ every_s = 30, for_s = 4 }`.
    pub synthetic_motion: Option<SyntheticMotion>,
    /// Test equipment for the `synthetic` source only: a picture (binary
    /// PGM, e.g. the pairing QR code from `kodama-server camera add
    /// --qr-image`) held in front of the lens, centred and shrunk to fit.
    /// The emulated boot shows the camera its pairing QR code this way.
    pub synthetic_scene: Option<std::path::PathBuf>,
}

/// When the synthetic source shows motion: for `for_s` seconds out of every
/// `every_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticMotion {
    /// The period, in seconds (2..=86400).
    pub every_s: u32,
    /// How long the motion lasts within each period (1..every_s).
    pub for_s: u32,
}

impl Default for VideoSection {
    fn default() -> Self {
        Self {
            source: VideoSourceKind::default(),
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1500,
            keyframe_interval: 30,
            synthetic_motion: None,
            synthetic_scene: None,
            abr: true,
            busy_scene: false,
        }
    }
}

impl VideoSection {
    /// The encoder settings.
    pub fn settings(&self) -> VideoSettings {
        VideoSettings {
            width: self.width,
            height: self.height,
            fps: self.fps,
            bitrate_kbps: self.bitrate_kbps,
            keyframe_interval: self.keyframe_interval,
        }
    }
}

/// `[wifi]`: the image's network scripts bring Wi-Fi up from this before the
/// firmware starts; the firmware only validates it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WifiSection {
    /// Network name (1..=32 bytes); empty means no Wi-Fi.
    pub ssid: String,
    /// WPA2 passphrase (8..=63 characters), or empty for an open network.
    pub psk: String,
    /// ISO 3166 country code for the regulatory domain, e.g. `GB`.
    pub country: String,
}

/// The retired `[cellular]` section. The modem and its data session have
/// one owner (the modem supervisor) and one section, `[modem]`; an old file
/// gets an error that says how to move the two keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetiredCellularSection;

/// What to write instead of `[cellular]`.
pub const CELLULAR_MOVED: &str = "the [cellular] section has moved into [modem]: \
     write `[modem]` with `enabled = true` and `apn = \"<your operator's APN>\"` \
     (the camera's modem supervisor sets the APN, keeps the data session up, \
     starts GPS and reads the network time)";

impl<'de> Deserialize<'de> for RetiredCellularSection {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(CELLULAR_MOVED))
    }
}

/// `[time]`: NTP servers for the image's time sync.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSection {
    /// Host names or addresses.
    pub servers: Vec<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[camera]`
    pub camera: CameraSection,
    /// `[server]`
    pub server: ServerSection,
    /// `[network]`
    pub network: NetworkSection,
    /// `[video]`
    pub video: VideoSection,
    /// `[wifi]`
    pub wifi: WifiSection,
    /// `[cellular]`: retired (see [`CELLULAR_MOVED`]); always `None`.
    pub cellular: Option<RetiredCellularSection>,
    /// `[time]`
    pub time: TimeSection,
    /// `[system]`
    pub system: SystemSection,
    /// `[modem]`
    pub modem: crate::hw::modem::ModemConfig,
    /// `[gnss]`
    pub gnss: crate::hw::gnss::GnssConfig,
    /// `[telemetry]`
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// `[motion]`
    pub motion: crate::motion::MotionConfig,
    /// `[backlog]`: store-and-forward while the server is unreachable.
    pub backlog: crate::backlog::BacklogConfig,
    /// `[audio]`: microphone and Opus encoding.
    pub audio: crate::audio::AudioConfig,
    /// `[update]`: signed A/B updates (RAUC) and the health-gated commit.
    pub update: crate::update::UpdateConfig,
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&kodama_net::config::read(path)?, path)
    }

    /// Checks every value, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.into(),
            message,
        };
        let name = &self.camera.name;
        if name.is_empty() || name.len() > kodama_proto::message::MAX_NAME_LEN {
            return Err(invalid(
                "camera.name",
                format!("must be 1..=64 bytes, got {} bytes", name.len()),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid(
                "camera.name",
                "must not contain control characters".into(),
            ));
        }
        if let Some(p) = &self.server.pair {
            kodama_proto::pairing::PairingString::parse(p)
                .map_err(|e| invalid("server.pair", e.to_string()))?;
        }
        match (&self.server.ticket, &self.server.node_id) {
            // No server at all: the camera onboards by QR code (or uses
            // the server it paired with before).
            (None, None) => {}
            (Some(t), _) => {
                kodama_net::endpoint::parse_ticket(t)
                    .map_err(|e| invalid("server.ticket", e.to_string()))?;
            }
            (None, Some(id)) => {
                kodama_net::endpoint::parse_endpoint_id(id)
                    .map_err(|e| invalid("server.node_id", e.to_string()))?;
                if self.network.offline && self.server.addrs.is_empty() {
                    return Err(invalid(
                        "server.addrs",
                        "offline mode dials direct addresses only; give at least one".into(),
                    ));
                }
            }
        }
        self.validate_links()?;
        let (initial, max) = self.reconnect_bounds();
        if initial == 0 || initial > max {
            return Err(invalid(
                "network.reconnect_initial_ms",
                format!("must be 1..=reconnect_max_ms ({max}), got {initial}"),
            ));
        }
        if max > 300_000 {
            return Err(invalid(
                "network.reconnect_max_ms",
                format!("must be at most 300000 (5 minutes), got {max}"),
            ));
        }
        self.video.settings().validate().map_err(|e| match e {
            crate::video::VideoError::InvalidSettings { field, message } => {
                invalid(&format!("video.{field}"), message)
            }
            other => invalid("video", other.to_string()),
        })?;
        self.video
            .source
            .check_built_in()
            .map_err(|message| invalid("video.source", message))?;
        self.backlog
            .validate()
            .map_err(|(field, message)| invalid(field, message))?;
        self.audio
            .validate()
            .map_err(|(field, message)| invalid(field, message))?;
        Ok(())
    }

    fn validate_links(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.into(),
            message,
        };
        let w = &self.wifi;
        if w.ssid.len() > 32 {
            return Err(invalid(
                "wifi.ssid",
                format!("must be at most 32 bytes, got {}", w.ssid.len()),
            ));
        }
        let psk_chars = w.psk.chars().count();
        if !w.psk.is_empty() && !(8..=63).contains(&psk_chars) {
            return Err(invalid(
                "wifi.psk",
                format!("a WPA2 passphrase is 8..=63 characters, got {psk_chars} (leave it empty for an open network)"),
            ));
        }
        let iso_code = w.country.len() == 2 && w.country.chars().all(|c| c.is_ascii_uppercase());
        if !w.country.is_empty() && !iso_code {
            return Err(invalid(
                "wifi.country",
                format!(
                    "must be a two-letter ISO 3166 code like \"GB\", got {:?}",
                    w.country
                ),
            ));
        }
        if let Some(m) = self.video.synthetic_motion {
            if self.video.source != VideoSourceKind::Synthetic {
                return Err(invalid(
                    "video.synthetic_motion",
                    "is test equipment for video.source = \"synthetic\" only; a real camera sees real motion".into(),
                ));
            }
            if !(2..=86_400).contains(&m.every_s) || m.for_s == 0 || m.for_s >= m.every_s {
                return Err(invalid(
                    "video.synthetic_motion",
                    format!(
                        "needs 2 <= every_s <= 86400 and 1 <= for_s < every_s, got every_s = {}, for_s = {}",
                        m.every_s, m.for_s
                    ),
                ));
            }
        }
        if self.video.synthetic_scene.is_some() {
            if !cfg!(feature = "synthetic") {
                return Err(invalid(
                    "video.synthetic_scene",
                    "is test equipment for the synthetic source, which this firmware does not contain".into(),
                ));
            }
            if self.video.source != VideoSourceKind::Synthetic {
                return Err(invalid(
                    "video.synthetic_scene",
                    "is test equipment for video.source = \"synthetic\" only; a real camera films what is in front of it".into(),
                ));
            }
        }
        if self.motion.pir_gpio.is_some() && !cfg!(feature = "pi") {
            return Err(invalid(
                "motion.pir_gpio",
                "a PIR sensor needs a firmware built with the `pi` feature (GPIO)".into(),
            ));
        }
        if !(1..=1_000).contains(&self.motion.pir_poll_ms) {
            return Err(invalid(
                "motion.pir_poll_ms",
                format!("must be 1..=1000, got {}", self.motion.pir_poll_ms),
            ));
        }
        self.modem.validate().map_err(|e| match e {
            crate::hw::modem::StartError::Config { field, why } => invalid(field, why),
            other => invalid("modem", other.to_string()),
        })?;
        let uplinks = &self.network.uplinks;
        if uplinks.len() > 4 {
            return Err(invalid(
                "network.uplinks",
                format!("at most 4 uplinks, got {}", uplinks.len()),
            ));
        }
        if !uplinks.is_empty() && self.network.bind.is_some() {
            return Err(invalid(
                "network.bind",
                "each uplink binds its interface's address; remove network.bind".into(),
            ));
        }
        for (i, u) in uplinks.iter().enumerate() {
            let bad_name =
                u.name.is_empty() || u.name.len() > 16 || u.name.chars().any(char::is_control);
            if bad_name {
                return Err(invalid(
                    &format!("network.uplinks[{i}].name"),
                    format!("must be 1..=16 printable bytes, got {:?}", u.name),
                ));
            }
            let bad_iface = u.interface.is_empty()
                || u.interface.len() > 15
                || u.interface.contains(['/', ' '])
                || u.interface.chars().any(char::is_control);
            if bad_iface {
                return Err(invalid(
                    &format!("network.uplinks[{i}].interface"),
                    format!(
                        "must be an interface name like \"wlan0\", got {:?}",
                        u.interface
                    ),
                ));
            }
            if uplinks[..i]
                .iter()
                .any(|o| o.name == u.name || o.interface == u.interface)
            {
                return Err(invalid(
                    &format!("network.uplinks[{i}]"),
                    format!("{:?} ({}) is listed twice", u.name, u.interface),
                ));
            }
        }
        if let Some(s) = self.network.return_after_s {
            if !(0.0..=3600.0).contains(&s) {
                return Err(invalid(
                    "network.return_after_s",
                    format!("must be 0..=3600 seconds, got {s}"),
                ));
            }
        }
        if let Some(bad) = self
            .time
            .servers
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                "time.servers",
                format!("{bad:?} is not a host name"),
            ));
        }
        Ok(())
    }

    /// Where the camera records that it has paired: beside its key, on the
    /// data partition (it survives updates and reboots).
    pub fn paired_record_path(&self) -> PathBuf {
        self.camera.key_path.with_extension("paired.toml")
    }

    /// Where Wi-Fi credentials read from a pairing QR code are kept (the
    /// image's network script reads them when `kodama.toml` has no `[wifi]`).
    pub fn qr_wifi_path(&self) -> PathBuf {
        self.camera.key_path.with_extension("wifi.toml")
    }

    /// Reconnect backoff bounds in milliseconds.
    pub fn reconnect_bounds(&self) -> (u64, u64) {
        (
            self.network.reconnect_initial_ms.unwrap_or(250),
            self.network.reconnect_max_ms.unwrap_or(10_000),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        kodama_net::SecretKey::generate().public().to_string()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(text, Path::new("kodama.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn minimal_file_with_defaults() {
        let c = parse(&format!(
            "[server]\nnode_id = \"{}\"\naddrs = [\"127.0.0.1:7070\"]\n[network]\noffline = true\n",
            id()
        ))
        .expect("valid");
        assert_eq!(c.video.fps, 30);
        assert_eq!(c.camera.name, "camera");
    }

    #[test]
    fn synthetic_motion_only_with_the_synthetic_source_and_a_sane_schedule() {
        let base = format!("[server]\nnode_id = \"{}\"\n", id());
        let err = parse(&format!(
            "{base}[video]\nsource = \"pi\"\nsynthetic_motion = {{ every_s = 30, for_s = 4 }}\n"
        ))
        .expect_err("a real camera");
        assert!(
            err.to_string().starts_with("video.synthetic_motion"),
            "{err}"
        );
        if cfg!(feature = "synthetic") {
            let ok = parse(&format!(
                "{base}[video]\nsource = \"synthetic\"\nsynthetic_motion = {{ every_s = 30, for_s = 4 }}\n"
            ))
            .expect("valid");
            assert_eq!(
                ok.video.synthetic_motion,
                Some(SyntheticMotion {
                    every_s: 30,
                    for_s: 4
                })
            );
            let err = parse(&format!(
                "{base}[video]\nsource = \"synthetic\"\nsynthetic_motion = {{ every_s = 4, for_s = 4 }}\n"
            ))
            .expect_err("always on");
            assert!(err.to_string().contains("for_s < every_s"), "{err}");
        }
    }

    #[test]
    fn synthetic_scene_only_with_the_synthetic_source() {
        let base = format!("[server]\nnode_id = \"{}\"\n", id());
        // The shipping build's source: the setting is refused by name.
        let err = parse(&format!(
            "{base}[video]\nsource = \"pi\"\nsynthetic_scene = \"/boot/scene.pgm\"\n"
        ))
        .expect_err("a real camera");
        assert!(
            err.to_string().starts_with("video.synthetic_scene"),
            "{err}"
        );
        let r = parse(&format!(
            "{base}[video]\nsource = \"synthetic\"\nsynthetic_scene = \"/boot/scene.pgm\"\n"
        ));
        if cfg!(feature = "synthetic") {
            let ok = r.expect("valid");
            assert_eq!(
                ok.video.synthetic_scene.as_deref(),
                Some(Path::new("/boot/scene.pgm"))
            );
        } else {
            let err = r.expect_err("not built in");
            assert!(
                err.to_string().starts_with("video.synthetic_scene"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[video]\nfsp = 30\n").expect_err("typo");
        assert!(err.to_string().contains("fsp"), "{err}");
        let err = parse("[vidoe]\n").expect_err("typo");
        assert!(err.to_string().contains("vidoe"), "{err}");
    }

    #[test]
    fn image_network_sections_are_accepted_and_checked() {
        let base = format!("[server]\nnode_id = \"{}\"\n", id());
        let ok = parse(&format!(
            "{base}[wifi]\nssid = \"home\"\npsk = \"correct horse\"\ncountry = \"GB\"\n[modem]\nenabled = true\napn = \"internet\"\n[time]\nservers = [\"pool.ntp.org\"]\n"
        ))
        .expect("valid");
        assert_eq!(ok.wifi.ssid, "home");
        let err = parse(&format!("{base}[wifi]\npsk = \"short\"\n")).expect_err("psk");
        assert!(err.to_string().starts_with("wifi.psk"), "{err}");
        let err = parse(&format!("{base}[wifi]\ncountry = \"gbr\"\n")).expect_err("country");
        assert!(err.to_string().starts_with("wifi.country"), "{err}");
        let err =
            parse(&format!("{base}[modem]\nenabled = true\napn = \"a b\"\n")).expect_err("apn");
        assert!(err.to_string().starts_with("modem.apn"), "{err}");
        let err = parse(&format!(
            "{base}[cellular]\nenabled = true\napn = \"internet\"\n"
        ))
        .expect_err("old section");
        assert!(err.to_string().contains("moved into [modem]"), "{err}");
        let err = parse(&format!("{base}[time]\nservers = [\"a b\"]\n")).expect_err("ntp");
        assert!(err.to_string().starts_with("time.servers"), "{err}");
    }

    #[test]
    fn uplinks_for_failover_are_parsed_and_checked() {
        let base = format!("[server]\nnode_id = \"{}\"\n", id());
        let two = "[[network.uplinks]]\nname = \"wifi\"\ninterface = \"wlan0\"\n[[network.uplinks]]\nname = \"cell\"\ninterface = \"wwan0\"\n";
        let ok = parse(&format!("{base}[network]\nreturn_after_s = 20\n{two}")).expect("valid");
        assert_eq!(ok.network.uplinks.len(), 2);
        assert_eq!(ok.network.uplinks[1].interface, "wwan0");
        assert_eq!(ok.network.return_after_s, Some(20.0));
        let dup = "[[network.uplinks]]\nname = \"a\"\ninterface = \"wlan0\"\n[[network.uplinks]]\nname = \"b\"\ninterface = \"wlan0\"\n";
        let err = parse(&format!("{base}{dup}")).expect_err("twice");
        assert!(err.to_string().starts_with("network.uplinks[1]"), "{err}");
        let bad = "[[network.uplinks]]\nname = \"a\"\ninterface = \"../x\"\n";
        let err = parse(&format!("{base}{bad}")).expect_err("iface");
        assert!(
            err.to_string().starts_with("network.uplinks[0].interface"),
            "{err}"
        );
        let err =
            parse(&format!("{base}[network]\nbind = \"0.0.0.0:0\"\n{two}")).expect_err("bind");
        assert!(err.to_string().starts_with("network.bind"), "{err}");
        let err = parse(&format!("{base}[network]\nreturn_after_s = -1\n")).expect_err("neg");
        assert!(
            err.to_string().starts_with("network.return_after_s"),
            "{err}"
        );
    }

    #[test]
    fn the_image_example_config_is_valid_once_a_ticket_is_pasted() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../buildroot-overlay/board/kodama/kodama.toml.example");
        let text = std::fs::read_to_string(&path).expect("example shipped with the image");
        let err = parse(&text).expect_err("placeholder ticket");
        assert!(err.to_string().starts_with("server.ticket"), "{err}");
        let addr = kodama_net::EndpointAddr::new(kodama_net::SecretKey::generate().public());
        let ticket = kodama_net::EndpointTicket::new(addr).to_string();
        let text = text.replace("PASTE-THE-SERVER-TICKET-HERE", &ticket);
        let c = Config::from_toml(&text, Path::new("kodama.toml")).expect("parses");
        assert_eq!(c.camera.name, "front-door");
        // The image ships the camera, not the test pattern.
        assert_eq!(c.video.source, VideoSourceKind::Pi);
        match (c.validate(), cfg!(feature = "pi")) {
            (Ok(()), true) => {}
            (Err(e), false) => assert!(e.to_string().starts_with("video.source"), "{e}"),
            (r, pi) => panic!("pi feature {pi}: {r:?}"),
        }
    }

    #[test]
    fn default_source_is_the_camera_where_it_is_built_in() {
        let c = Config::default();
        if cfg!(feature = "pi") || !cfg!(feature = "synthetic") {
            assert_eq!(c.video.source, VideoSourceKind::Pi);
        } else {
            assert_eq!(c.video.source, VideoSourceKind::Synthetic);
        }
    }

    #[test]
    fn sources_not_built_in_are_refused_by_name() {
        let base = format!(
            "[server]\nnode_id = \"{}\"\naddrs = [\"127.0.0.1:1\"]\n",
            id()
        );
        for kind in [VideoSourceKind::Synthetic, VideoSourceKind::Pi] {
            let r = parse(&format!("{base}[video]\nsource = \"{}\"\n", kind.name()));
            let built_in = match kind {
                VideoSourceKind::Synthetic => cfg!(feature = "synthetic"),
                VideoSourceKind::Pi => cfg!(feature = "pi"),
            };
            match r {
                Ok(c) => assert!(built_in && c.video.source == kind),
                Err(e) => {
                    assert!(!built_in, "{e}");
                    let e = e.to_string();
                    assert!(
                        e.starts_with("video.source") && e.contains(kind.name()),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn simulator_settings_are_refused_with_the_way_out() {
        let base = format!("[server]\nnode_id = \"{}\"\n", id());
        let err = parse(&format!("{base}[modem]\nsimulated = \"healthy\"\n")).expect_err("sim");
        assert!(err.to_string().contains("kodama-sim"), "{err}");
        let err = parse(&format!("{base}[gnss]\nsource = \"simulated\"\n")).expect_err("sim");
        assert!(err.to_string().contains("kodama-sim"), "{err}");
    }

    #[test]
    fn a_pairing_string_is_enough_and_is_checked() {
        let addr = kodama_net::EndpointAddr::new(kodama_net::SecretKey::generate().public());
        let ticket = kodama_net::EndpointTicket::new(addr).to_string();
        let c = parse(&format!(
            "[server]\npair = \"kodama:pair?v=1&code=ABCD-EFGH-JKMN&server={ticket}\"\n[system]\nreboot_command = [\"/sbin/reboot\"]\n"
        ))
        .expect("valid");
        assert_eq!(c.system.reboot_command, vec!["/sbin/reboot".to_owned()]);
        let err = parse("[server]\npair = \"kodama:pair?v=1&code=nope&server=x\"\n")
            .expect_err("bad code");
        assert!(err.to_string().starts_with("server.pair"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let base = format!(
            "[server]\nnode_id = \"{}\"\naddrs = [\"127.0.0.1:1\"]\n",
            id()
        );
        let err = parse(&format!("{base}[video]\nfps = 0\n")).expect_err("fps");
        assert!(err.to_string().starts_with("video.fps:"), "{err}");
        let err = parse(&format!("{base}[camera]\nname = \"\"\n")).expect_err("name");
        assert!(err.to_string().starts_with("camera.name:"), "{err}");
        let err = parse("[server]\nnode_id = \"nope\"\n").expect_err("id");
        assert!(err.to_string().starts_with("server.node_id:"), "{err}");
        // No server: the camera onboards by QR code.
        assert!(parse("").is_ok());
        let err = parse(&format!(
            "[server]\nnode_id = \"{}\"\n[network]\noffline = true\n",
            id()
        ))
        .expect_err("offline needs addrs");
        assert!(err.to_string().starts_with("server.addrs:"), "{err}");
        let err =
            parse(&format!("{base}[network]\nreconnect_initial_ms = 0\n")).expect_err("backoff");
        assert!(
            err.to_string().starts_with("network.reconnect_initial_ms"),
            "{err}"
        );
        let err = parse(&format!("{base}[backlog]\nmax_mb = 0\n")).expect_err("backlog");
        assert!(err.to_string().starts_with("backlog.max_mb:"), "{err}");
        let ok = parse(&format!(
            "{base}[backlog]\ndir = \"/data/backlog\"\nmax_mb = 64\nupload_kbps = 800\n"
        ))
        .expect("backlog table");
        assert_eq!(ok.backlog.max_bytes(), 64_000_000);
        let err = parse(&format!("{base}[video]\nfps = \"fast\"\n")).expect_err("type");
        assert!(err.to_string().contains("fps"), "{err}");
    }
}
