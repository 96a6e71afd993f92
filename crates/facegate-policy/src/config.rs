//! The config sections this crate owns: raw serde structs (`Raw*`, `deny_unknown_fields`) and the
//! validated types built from them by [`PolicyConfig::from_raw`]. Other crates only ever see the
//! validated types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::PolicyError;
use crate::credential::{CredentialKind, LockoutPolicy, RawLockout};
use crate::retention::{MAX_RETENTION_DAYS, RawRetention, RetentionPolicy};

// ----- enums ---------------------------------------------------------------------------------

/// The one purpose a deployment declares (Art. 4). A consent is given for exactly one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Opening a gate or door for enrolled people.
    AccessControl,
    /// Recording when enrolled people arrive and leave.
    Attendance,
}

impl Purpose {
    /// Every purpose, for property tests and help texts.
    pub const ALL: [Purpose; 2] = [Purpose::AccessControl, Purpose::Attendance];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::AccessControl => "access_control",
            Purpose::Attendance => "attendance",
        }
    }

    /// One sentence for notices and reports.
    pub fn description(self) -> &'static str {
        match self {
            Purpose::AccessControl => {
                "access control: the gate opens for enrolled people who are recognised"
            }
            Purpose::Attendance => {
                "attendance: the time at which enrolled people pass the gate is recorded"
            }
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the terminal is installed (Art. 13). The forbidden kinds parse, so that the refusal can
/// name the article instead of "unknown variant".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    OfficeEntrance,
    ResidentialGate,
    FactoryGate,
    CampusGate,
    /// A public place (Art. 13: only where public safety needs it, with prominent signs).
    PublicVenue,
    /// Forbidden (Art. 13).
    HotelRoom,
    /// Forbidden (Art. 13).
    PublicBathroom,
    /// Forbidden (Art. 13).
    ChangingRoom,
    /// Forbidden (Art. 13).
    Toilet,
}

impl SiteKind {
    /// Every site kind, for property tests and help texts.
    pub const ALL: [SiteKind; 9] = [
        SiteKind::OfficeEntrance,
        SiteKind::ResidentialGate,
        SiteKind::FactoryGate,
        SiteKind::CampusGate,
        SiteKind::PublicVenue,
        SiteKind::HotelRoom,
        SiteKind::PublicBathroom,
        SiteKind::ChangingRoom,
        SiteKind::Toilet,
    ];

    /// Private spaces inside public places, where Art. 13 forbids face recognition.
    pub fn is_forbidden(self) -> bool {
        matches!(
            self,
            SiteKind::HotelRoom
                | SiteKind::PublicBathroom
                | SiteKind::ChangingRoom
                | SiteKind::Toilet
        )
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::OfficeEntrance => "office_entrance",
            SiteKind::ResidentialGate => "residential_gate",
            SiteKind::FactoryGate => "factory_gate",
            SiteKind::CampusGate => "campus_gate",
            SiteKind::PublicVenue => "public_venue",
            SiteKind::HotelRoom => "hotel_room",
            SiteKind::PublicBathroom => "public_bathroom",
            SiteKind::ChangingRoom => "changing_room",
            SiteKind::Toilet => "toilet",
        }
    }
}

impl fmt::Display for SiteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Production refuses debug image capture; development allows it on a test bench.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Production,
    Development,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Production => "production",
            Mode::Development => "development",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ----- raw config ----------------------------------------------------------------------------

/// The policy sections of the config file, as parsed. The binary embeds these as top-level
/// tables of its own config (`[deployment]`, `[notice]`, `[retention]`, `[alternatives]`,
/// `[filing]`, `[matching]`) and hands them to [`PolicyConfig::from_raw`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyConfig {
    pub deployment: RawDeployment,
    pub notice: RawNotice,
    pub retention: RawRetention,
    pub alternatives: RawAlternatives,
    #[serde(default)]
    pub filing: RawFiling,
    pub matching: RawMatching,
    #[serde(default)]
    pub lockout: RawLockout,
}

/// `[deployment]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    /// The personal information processor (Art. 5): the organisation running the gate.
    pub processor_name: String,
    /// How people reach the processor to exercise their rights (Art. 5).
    pub processor_contact: String,
    pub purpose: Purpose,
    pub site_kind: SiteKind,
    /// Where the terminal is, in words ("Building A, north entrance").
    pub site_name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub debug_image_capture: bool,
}

/// `[notice]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotice {
    /// Bumped on every change of what people are told; each consent records it.
    pub version: u32,
    /// The language shown first; defaults to the first language code in `texts`.
    #[serde(default)]
    pub default_language: Option<String>,
    /// Notice text per language code (`zh-CN`, `en`, ...).
    #[serde(default)]
    pub texts: BTreeMap<String, String>,
    /// The prominent sign at the collection area (Art. 13).
    #[serde(default)]
    pub signage: String,
    /// The retention period in words (Art. 5).
    #[serde(default)]
    pub retention_statement: String,
    /// What the gate does with people who consented under an older notice version until they
    /// are informed again: `keep` (their consent stands; listed by `facegate consent pending`)
    /// or `suspend` (face decisions for them are denied `notice_pending`; credentials work).
    #[serde(default)]
    pub pending: NoticePending,
}

/// See [`RawNotice::pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticePending {
    #[default]
    Keep,
    Suspend,
}

impl NoticePending {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Keep => {
                "their consent stands and face recognition goes on for them (notice.pending = keep)"
            }
            Self::Suspend => {
                "face decisions for them are denied (notice_pending) until they consent again; \
                 their credentials still work (notice.pending = suspend)"
            }
        }
    }
}

/// `[alternatives]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlternatives {
    #[serde(default)]
    pub pin: bool,
    #[serde(default)]
    pub card: bool,
    #[serde(default)]
    pub qr: bool,
    #[serde(default)]
    pub operator_override: bool,
    /// Days an issued PIN, card or QR credential stays valid (its own retention, independent
    /// of any face consent); default 365.
    #[serde(default)]
    pub credential_days: Option<u32>,
}

/// `[filing]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiling {
    /// Fraction of the Art. 15 threshold (100,000 people) at which an alert fires.
    #[serde(default = "default_warn_fraction")]
    pub warn_fraction: f64,
}

fn default_warn_fraction() -> f64 {
    0.8
}

impl Default for RawFiling {
    fn default() -> Self {
        Self {
            warn_fraction: default_warn_fraction(),
        }
    }
}

/// `[matching]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatching {
    /// False-match-rate operating point, mapped to a calibrated cosine threshold.
    #[serde(default)]
    pub fmr: Option<f64>,
    /// Expert override: a raw cosine threshold that wins over `fmr`.
    #[serde(default)]
    pub cosine_override: Option<f32>,
    /// Identification: the best identity must beat the second by this much cosine.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// Consecutive frames that must agree before a decision.
    #[serde(default = "default_frames")]
    pub frames_to_agree: u32,
    /// Identification (1:N): the target false-positive identification rate per attempt; the
    /// threshold then follows the gallery size (`matching::fpir_threshold`). Unset: 1:N uses
    /// the `fmr` threshold as 1:1 does.
    #[serde(default)]
    pub fpir: Option<f64>,
}

/// The largest `fpir` accepted: one stranger in ten identified as someone is no operating
/// point for a gate.
pub const MAX_FPIR: f64 = 0.1;

fn default_margin() -> f32 {
    0.05
}

fn default_frames() -> u32 {
    2
}

/// The example policy sections, valid as they stand: the one source of the example policy.
/// [`RawPolicyConfig::example`] parses it, and `configs/facegate.toml` must hold the same
/// sections with the same values (`the_shipped_config_holds_the_example_policy`).
pub const EXAMPLE_TOML: &str = r#"[deployment]
processor_name = "Example Property Management Co., Ltd."
processor_contact = "privacy@example.com, +86 10 0000 0000, front desk of Building A"
purpose = "access_control"          # access_control | attendance
site_kind = "office_entrance"       # office_entrance | residential_gate | factory_gate | campus_gate | public_venue
site_name = "Building A, north entrance"
mode = "production"                 # production | development
debug_image_capture = false         # refused in production

[notice]
version = 1                         # bump on every change of what people are told
default_language = "zh-CN"
pending = "keep"                    # keep | suspend: people who consented under an older version
signage = "Face recognition in use at this gate. Not enrolled or prefer not to? Use your card or PIN, or ask the guard."
retention_statement = "Face templates are deleted 365 days after consent (180 days for people under 18), or at once when you withdraw."

[notice.texts]
zh-CN = "本门禁使用人脸识别用于通行控制。处理者：示例物业管理有限公司（privacy@example.com）。仅在本设备上保存加密的人脸特征，不保存照片，不上传网络。保存期限365天（未满18周岁180天）。您可随时撤回同意，撤回后立即删除。您也可以使用门禁卡、密码或由工作人员放行。"
en = "This gate uses face recognition for access control. Processor: Example Property Management Co., Ltd. (privacy@example.com). Only an encrypted face template is kept, on this device only; no photos are stored and nothing is sent over a network. Kept for 365 days (180 days under 18). You may withdraw consent at any time; your data is then deleted at once. You can always use a card, a PIN or ask the guard instead."

[retention]
days = 365
minor_days = 180
sweep_interval_minutes = 60

[alternatives]
pin = true
card = true
qr = false
operator_override = true
credential_days = 365               # validity of an issued PIN, card or QR (its own retention)

[lockout]                           # back-off after wrong credentials or a face that fails a claim
max_failures = 5                    # failures in a row before a lockout
base_seconds = 30                   # first lockout; each further one doubles ...
max_seconds = 3600                  # ... up to this (a 10,000-PIN sweep then takes 83 days)
reset_minutes = 1440                # a success, or a day without failures, clears it

[filing]
warn_fraction = 0.8

[matching]
fmr = 1e-4
# cosine_override = 0.45            # expert only: raw cosine threshold, wins over fmr
margin = 0.05
frames_to_agree = 2
# fpir = 1e-3                       # 1:N: false-positive identifications per attempt; the
#                                   # threshold then follows the gallery size (fmr stays for 1:1)
"#;

impl RawPolicyConfig {
    /// [`EXAMPLE_TOML`] parsed: the one example policy, for tests in other crates
    /// (`configs/facegate.toml` holds the same sections; a test keeps the two equal).
    pub fn example() -> Self {
        // A compile-time constant; `example_validates` proves it parses and validates.
        #[allow(clippy::expect_used)]
        toml::from_str(EXAMPLE_TOML).expect("EXAMPLE_TOML parses")
    }
}

// ----- limits --------------------------------------------------------------------------------

/// Longest free-text field (processor name, contact, site name, signage line).
pub const MAX_SHORT_TEXT: usize = 512;
/// Longest notice text per language.
pub const MAX_NOTICE_TEXT: usize = 16 * 1024;
/// Most permissive false-match rate accepted: 1 in 100. Beyond that a gate opens for strangers.
pub const MAX_FMR: f64 = 1e-2;
/// Most frames a decision may wait for (one second at 30 fps).
pub const MAX_FRAMES_TO_AGREE: u32 = 30;

// ----- validated config ----------------------------------------------------------------------

/// `[deployment]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    processor_name: String,
    processor_contact: String,
    purpose: Purpose,
    site_kind: SiteKind,
    site_name: String,
    mode: Mode,
    debug_image_capture: bool,
}

impl Deployment {
    pub fn from_raw(raw: RawDeployment) -> Result<Self, PolicyError> {
        let processor_name = short_text("[deployment].processor_name", raw.processor_name)?;
        let processor_contact =
            short_text("[deployment].processor_contact", raw.processor_contact)?;
        let site_name = short_text("[deployment].site_name", raw.site_name)?;
        if raw.site_kind.is_forbidden() {
            return Err(PolicyError::ForbiddenSiteKind {
                kind: raw.site_kind,
            });
        }
        if raw.debug_image_capture {
            match raw.mode {
                Mode::Production => return Err(PolicyError::DebugCaptureInProduction),
                Mode::Development => tracing::warn!(
                    mode = "development",
                    "debug image capture is on: raw frames may be written; never use this \
                     configuration where real people pass"
                ),
            }
        }
        Ok(Self {
            processor_name,
            processor_contact,
            purpose: raw.purpose,
            site_kind: raw.site_kind,
            site_name,
            mode: raw.mode,
            debug_image_capture: raw.debug_image_capture,
        })
    }

    pub fn processor_name(&self) -> &str {
        &self.processor_name
    }
    pub fn processor_contact(&self) -> &str {
        &self.processor_contact
    }
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    /// Never a forbidden kind.
    pub fn site_kind(&self) -> SiteKind {
        self.site_kind
    }
    pub fn site_name(&self) -> &str {
        &self.site_name
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// Always `false` in production mode.
    pub fn debug_image_capture(&self) -> bool {
        self.debug_image_capture
    }
}

/// `[notice]`, validated: version >= 1, at least one non-empty text, signage and retention
/// statement present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    version: u32,
    default_language: String,
    texts: BTreeMap<String, String>,
    signage: String,
    retention_statement: String,
    pending: NoticePending,
}

impl Notice {
    pub fn from_raw(raw: RawNotice) -> Result<Self, PolicyError> {
        if raw.version == 0 {
            return Err(PolicyError::NoticeIncomplete {
                field: "[notice].version",
                reason: "must be 1 or higher".to_owned(),
            });
        }
        if raw.texts.is_empty() {
            return Err(PolicyError::NoticeIncomplete {
                field: "[notice.texts]",
                reason: "no notice text; add at least one language, e.g. zh-CN = \"...\""
                    .to_owned(),
            });
        }
        let mut texts = BTreeMap::new();
        for (lang, text) in raw.texts {
            if !is_language_code(&lang) {
                return Err(PolicyError::InvalidConfig {
                    field: "[notice.texts]",
                    reason: format!(
                        "`{lang}` is not a language code (letters, digits and '-', such as \
                         zh-CN or en)"
                    ),
                });
            }
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(PolicyError::NoticeIncomplete {
                    field: "[notice.texts]",
                    reason: format!("the `{lang}` text is empty"),
                });
            }
            if text.len() > MAX_NOTICE_TEXT {
                return Err(PolicyError::NoticeIncomplete {
                    field: "[notice.texts]",
                    reason: format!(
                        "the `{lang}` text is longer than {MAX_NOTICE_TEXT} bytes; a notice must \
                         be clear and readable"
                    ),
                });
            }
            texts.insert(lang, text);
        }
        let default_language = match raw.default_language {
            Some(lang) if texts.contains_key(&lang) => lang,
            Some(lang) => {
                return Err(PolicyError::NoticeIncomplete {
                    field: "[notice].default_language",
                    reason: format!("`{lang}` has no text in [notice.texts]"),
                });
            }
            None => texts.keys().next().cloned().unwrap_or_default(),
        };
        let signage = notice_text("[notice].signage", raw.signage)?;
        let retention_statement =
            notice_text("[notice].retention_statement", raw.retention_statement)?;
        Ok(Self {
            version: raw.version,
            default_language,
            texts,
            signage,
            retention_statement,
            pending: raw.pending,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }
    /// What happens to people who consented under an older version.
    pub fn pending(&self) -> NoticePending {
        self.pending
    }
    pub fn default_language(&self) -> &str {
        &self.default_language
    }
    /// Language code -> text; never empty.
    pub fn texts(&self) -> &BTreeMap<String, String> {
        &self.texts
    }
    /// The text in `lang`, falling back to the default language.
    pub fn text(&self, lang: &str) -> &str {
        self.texts
            .get(lang)
            .or_else(|| self.texts.get(&self.default_language))
            .map(String::as_str)
            .unwrap_or_default()
    }
    pub fn signage(&self) -> &str {
        &self.signage
    }
    pub fn retention_statement(&self) -> &str {
        &self.retention_statement
    }
}

/// `[alternatives]`, validated: at least one non-face credential (Art. 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alternatives {
    pin: bool,
    card: bool,
    qr: bool,
    operator_override: bool,
    credential_days: u32,
}

/// Credential validity when `[alternatives].credential_days` is not set.
pub const DEFAULT_CREDENTIAL_DAYS: u32 = 365;

impl Alternatives {
    pub fn from_raw(raw: RawAlternatives) -> Result<Self, PolicyError> {
        if !(raw.pin || raw.card || raw.qr || raw.operator_override) {
            return Err(PolicyError::NoAlternativeCredential);
        }
        let credential_days = raw.credential_days.unwrap_or(DEFAULT_CREDENTIAL_DAYS);
        if credential_days == 0 || credential_days > MAX_RETENTION_DAYS {
            return Err(PolicyError::InvalidConfig {
                field: "[alternatives].credential_days",
                reason: format!("{credential_days} is not in 1..={MAX_RETENTION_DAYS}"),
            });
        }
        Ok(Self {
            pin: raw.pin,
            card: raw.card,
            qr: raw.qr,
            operator_override: raw.operator_override,
            credential_days,
        })
    }
    /// Whether credentials of `kind` are accepted at this terminal.
    pub fn accepts(&self, kind: CredentialKind) -> bool {
        match kind {
            CredentialKind::Pin => self.pin,
            CredentialKind::Card => self.card,
            CredentialKind::Qr => self.qr,
        }
    }
    /// Days an issued credential stays valid.
    pub fn credential_days(&self) -> u32 {
        self.credential_days
    }
    pub fn pin(&self) -> bool {
        self.pin
    }
    pub fn card(&self) -> bool {
        self.card
    }
    pub fn qr(&self) -> bool {
        self.qr
    }
    pub fn operator_override(&self) -> bool {
        self.operator_override
    }
    /// The enabled alternatives in config spelling, never empty.
    pub fn enabled(&self) -> Vec<&'static str> {
        [
            (self.pin, "pin"),
            (self.card, "card"),
            (self.qr, "qr"),
            (self.operator_override, "operator_override"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// `[filing]`, validated: `0 < warn_fraction < 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilingPolicy {
    warn_fraction: f64,
}

impl FilingPolicy {
    pub fn from_raw(raw: RawFiling) -> Result<Self, PolicyError> {
        if !(raw.warn_fraction.is_finite() && raw.warn_fraction > 0.0 && raw.warn_fraction < 1.0) {
            return Err(PolicyError::InvalidConfig {
                field: "[filing].warn_fraction",
                reason: format!(
                    "{} must be between 0 and 1 (exclusive), e.g. 0.8 to be alerted at 80,000 \
                     of the 100,000 people that require filing under Art. 15",
                    raw.warn_fraction
                ),
            });
        }
        Ok(Self {
            warn_fraction: raw.warn_fraction,
        })
    }
    pub fn warn_fraction(&self) -> f64 {
        self.warn_fraction
    }
}

/// `[matching]`, validated: a false-match rate in `(0, MAX_FMR]` and/or a cosine override in
/// `(0, 1)`, a margin in `[0, 1)`, `1..=MAX_FRAMES_TO_AGREE` frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchingPolicy {
    point: OperatingPoint,
    fpir: Option<f64>,
    fmr: Option<f64>,
    cosine_override: Option<f32>,
    margin: f32,
    frames_to_agree: u32,
}

/// How the match threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OperatingPoint {
    /// A false-match rate, mapped to the model's calibrated cosine threshold.
    Fmr(f64),
    /// An expert's raw cosine threshold.
    CosineOverride(f32),
}

impl fmt::Display for OperatingPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatingPoint::Fmr(fmr) => write!(f, "fmr:{fmr:e}"),
            OperatingPoint::CosineOverride(c) => write!(f, "cosine_override:{c}"),
        }
    }
}

impl MatchingPolicy {
    pub fn from_raw(raw: RawMatching) -> Result<Self, PolicyError> {
        if let Some(fmr) = raw.fmr
            && !(fmr.is_finite() && fmr > 0.0 && fmr <= MAX_FMR)
        {
            return Err(PolicyError::InvalidOperatingPoint {
                reason: format!(
                    "fmr = {fmr} must be a false-match rate in (0, {MAX_FMR:e}], such as 1e-4 \
                     (one false match in 10,000 comparisons)"
                ),
            });
        }
        if let Some(c) = raw.cosine_override
            && !(c.is_finite() && c > 0.0 && c < 1.0)
        {
            return Err(PolicyError::InvalidOperatingPoint {
                reason: format!("cosine_override = {c} must be a cosine threshold in (0, 1)"),
            });
        }
        let point = match (raw.cosine_override, raw.fmr) {
            (Some(c), _) => OperatingPoint::CosineOverride(c),
            (None, Some(f)) => OperatingPoint::Fmr(f),
            (None, None) => {
                return Err(PolicyError::InvalidOperatingPoint {
                    reason: "set fmr (e.g. fmr = 1e-4) or, for experts, cosine_override".to_owned(),
                });
            }
        };
        if !(raw.margin.is_finite() && raw.margin >= 0.0 && raw.margin < 1.0) {
            return Err(PolicyError::InvalidOperatingPoint {
                reason: format!(
                    "margin = {} must be in [0, 1), e.g. 0.05; it is the cosine by which the \
                     best identity must beat the second",
                    raw.margin
                ),
            });
        }
        if let Some(fpir) = raw.fpir
            && !(fpir.is_finite() && fpir > 0.0 && fpir <= MAX_FPIR)
        {
            return Err(PolicyError::InvalidOperatingPoint {
                reason: format!(
                    "fpir = {fpir} must be a false-positive identification rate in \
                     (0, {MAX_FPIR:e}], such as 1e-3 (one stranger in 1,000 attempts \
                     identified as someone)"
                ),
            });
        }
        if raw.frames_to_agree == 0 || raw.frames_to_agree > MAX_FRAMES_TO_AGREE {
            return Err(PolicyError::InvalidOperatingPoint {
                reason: format!(
                    "frames_to_agree = {} must be in 1..={MAX_FRAMES_TO_AGREE}",
                    raw.frames_to_agree
                ),
            });
        }
        Ok(Self {
            point,
            fpir: raw.fpir,
            fmr: raw.fmr,
            cosine_override: raw.cosine_override,
            margin: raw.margin,
            frames_to_agree: raw.frames_to_agree,
        })
    }

    pub fn fmr(&self) -> Option<f64> {
        self.fmr
    }
    /// The 1:N target, when set (a cosine override wins over it too).
    pub fn fpir(&self) -> Option<f64> {
        match self.point {
            OperatingPoint::CosineOverride(_) => None,
            OperatingPoint::Fmr(_) => self.fpir,
        }
    }
    pub fn cosine_override(&self) -> Option<f32> {
        self.cosine_override
    }
    /// The override wins when set.
    pub fn operating_point(&self) -> OperatingPoint {
        self.point
    }
    pub fn margin(&self) -> f32 {
        self.margin
    }
    pub fn frames_to_agree(&self) -> u32 {
        self.frames_to_agree
    }
}

/// The validated policy config; the only config type other crates use.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub(crate) deployment: Deployment,
    pub(crate) notice: Notice,
    pub(crate) retention: RetentionPolicy,
    pub(crate) alternatives: Alternatives,
    pub(crate) filing: FilingPolicy,
    pub(crate) matching: MatchingPolicy,
    pub(crate) lockout: LockoutPolicy,
}

/// How the notice changed since a recorded `(version, fingerprint)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeChange {
    Unchanged,
    /// The version went up: new consents record the new version (Art. 5: notify the change).
    Bumped {
        previous: u32,
        current: u32,
    },
}

impl PolicyConfig {
    /// Validates every section. The first problem found is returned.
    pub fn from_raw(raw: RawPolicyConfig) -> Result<Self, PolicyError> {
        let config = Self {
            deployment: Deployment::from_raw(raw.deployment)?,
            notice: Notice::from_raw(raw.notice)?,
            retention: RetentionPolicy::from_raw(raw.retention)?,
            alternatives: Alternatives::from_raw(raw.alternatives)?,
            filing: FilingPolicy::from_raw(raw.filing)?,
            matching: MatchingPolicy::from_raw(raw.matching)?,
            lockout: LockoutPolicy::from_raw(raw.lockout)?,
        };
        tracing::debug!(
            purpose = config.deployment.purpose.as_str(),
            site_kind = config.deployment.site_kind.as_str(),
            notice_version = config.notice.version,
            retention_days = config.retention.days(),
            "policy config validated"
        );
        Ok(config)
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }
    pub fn notice(&self) -> &Notice {
        &self.notice
    }
    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }
    pub fn alternatives(&self) -> &Alternatives {
        &self.alternatives
    }
    pub fn filing(&self) -> &FilingPolicy {
        &self.filing
    }
    pub fn matching(&self) -> &MatchingPolicy {
        &self.matching
    }
    pub fn lockout(&self) -> &LockoutPolicy {
        &self.lockout
    }
    pub fn purpose(&self) -> Purpose {
        self.deployment.purpose
    }

    /// A hash (`fnv1a64:<16 hex>`) of everything people are told (Art. 5): notice version,
    /// texts, signage, retention statement, processor, purpose and retention periods. Store it
    /// with the notice version and pass both to [`PolicyConfig::check_notice_change`] at start.
    pub fn notice_fingerprint(&self) -> String {
        let mut h = Fnv1a::new();
        h.field("version", &self.notice.version.to_string());
        h.field("default_language", &self.notice.default_language);
        for (lang, text) in &self.notice.texts {
            h.field("text.lang", lang);
            h.field("text.body", text);
        }
        h.field("signage", &self.notice.signage);
        h.field("retention_statement", &self.notice.retention_statement);
        h.field("processor_name", &self.deployment.processor_name);
        h.field("processor_contact", &self.deployment.processor_contact);
        h.field("purpose", self.deployment.purpose.as_str());
        h.field("retention_days", &self.retention.days().to_string());
        h.field(
            "minor_days",
            &self
                .retention
                .minor_days()
                .map_or_else(|| "none".to_owned(), |d| d.to_string()),
        );
        h.finish()
    }

    /// Refuses a notice whose content changed without a version bump, or whose version went
    /// down, compared with the `(version, notice_fingerprint)` recorded at the last start.
    pub fn check_notice_change(
        &self,
        previous_version: u32,
        previous_fingerprint: &str,
    ) -> Result<NoticeChange, PolicyError> {
        let current = self.notice.version;
        if current < previous_version {
            return Err(PolicyError::NoticeVersionDecreased {
                previous: previous_version,
                current,
            });
        }
        if current > previous_version {
            return Ok(NoticeChange::Bumped {
                previous: previous_version,
                current,
            });
        }
        if self.notice_fingerprint() != previous_fingerprint {
            return Err(PolicyError::NoticeChangedWithoutVersionBump { version: current });
        }
        Ok(NoticeChange::Unchanged)
    }

    /// The purpose, site and processing method as a stable, human-readable
    /// `key=value; key=value` string. An impact assessment records it; a different string
    /// means purpose or method changed and Art. 9 asks for a new assessment.
    pub fn purpose_method_fingerprint(&self) -> String {
        let minor = self
            .retention
            .minor_days()
            .map_or_else(|| "none".to_owned(), |d| d.to_string());
        format!(
            "purpose={}; site_kind={}; storage=on_device_encrypted_templates; \
             debug_image_capture={}; retention_days={}; minor_retention_days={}; \
             alternatives={}; operating_point={}",
            self.deployment.purpose,
            self.deployment.site_kind,
            self.deployment.debug_image_capture,
            self.retention.days(),
            minor,
            self.alternatives.enabled().join(","),
            self.matching.operating_point(),
        )
    }
}

// ----- helpers -------------------------------------------------------------------------------

/// FNV-1a, 64 bit: stable across builds and platforms, enough to notice a change (not a MAC).
#[derive(Debug)]
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// Length-prefixed so that field boundaries cannot shift.
    pub(crate) fn field(&mut self, name: &str, value: &str) {
        self.write(&(name.len() as u64).to_le_bytes());
        self.write(name.as_bytes());
        self.write(&(value.len() as u64).to_le_bytes());
        self.write(value.as_bytes());
    }
    pub(crate) fn finish(&self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

fn short_text(field: &'static str, value: String) -> Result<String, PolicyError> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(PolicyError::InvalidConfig {
            field,
            reason: "must not be empty (Art. 5 of the Measures: people must be told who \
                     processes their face data, where, and how to reach them)"
                .to_owned(),
        });
    }
    if value.len() > MAX_SHORT_TEXT {
        return Err(PolicyError::InvalidConfig {
            field,
            reason: format!("longer than {MAX_SHORT_TEXT} bytes"),
        });
    }
    Ok(value)
}

fn notice_text(field: &'static str, value: String) -> Result<String, PolicyError> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(PolicyError::NoticeIncomplete {
            field,
            reason: "must not be empty".to_owned(),
        });
    }
    if value.len() > MAX_NOTICE_TEXT {
        return Err(PolicyError::NoticeIncomplete {
            field,
            reason: format!("longer than {MAX_NOTICE_TEXT} bytes"),
        });
    }
    Ok(value)
}

fn is_language_code(s: &str) -> bool {
    (2..=35).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn example() -> RawPolicyConfig {
        RawPolicyConfig::example()
    }

    /// The shipped config's policy sections are the example policy, value for value (comments
    /// and layout may differ). Edit both, or neither.
    #[test]
    fn the_shipped_config_holds_the_example_policy() {
        let shipped: toml::Table =
            toml::from_str(include_str!("../../../configs/facegate.toml")).unwrap();
        let example: toml::Table = toml::from_str(EXAMPLE_TOML).unwrap();
        for (section, values) in &example {
            assert_eq!(
                shipped.get(section),
                Some(values),
                "[{section}] of configs/facegate.toml differs from EXAMPLE_TOML"
            );
        }
        let policy_sections = [
            "deployment",
            "notice",
            "retention",
            "alternatives",
            "lockout",
            "filing",
            "matching",
        ];
        for section in shipped.keys() {
            assert!(
                example.contains_key(section) || !policy_sections.contains(&section.as_str()),
                "[{section}] is a policy section missing from EXAMPLE_TOML"
            );
        }
        assert_eq!(example.len(), policy_sections.len());
    }

    #[test]
    fn example_validates() {
        let c = PolicyConfig::from_raw(example()).unwrap();
        assert_eq!(c.purpose(), Purpose::AccessControl);
        assert_eq!(c.notice().version(), 1);
        assert_eq!(
            c.alternatives().enabled(),
            ["pin", "card", "operator_override"]
        );
        assert_eq!(
            c.retention().sweep_interval(),
            std::time::Duration::from_secs(3600)
        );
    }

    #[test]
    fn every_forbidden_site_kind_is_refused_citing_art_13() {
        for kind in SiteKind::ALL {
            let mut raw = example();
            raw.deployment.site_kind = kind;
            let result = PolicyConfig::from_raw(raw);
            if kind.is_forbidden() {
                let err = result.unwrap_err();
                assert!(matches!(err, PolicyError::ForbiddenSiteKind { kind: k } if k == kind));
                let msg = err.to_string();
                assert!(msg.contains(&format!("`{kind}`")), "{msg}");
                assert!(msg.contains("Art. 13"), "{msg}");
            } else {
                assert!(result.is_ok(), "{kind}");
            }
        }
        let forbidden: Vec<_> = SiteKind::ALL
            .into_iter()
            .filter(|k| k.is_forbidden())
            .collect();
        assert_eq!(
            forbidden,
            [
                SiteKind::HotelRoom,
                SiteKind::PublicBathroom,
                SiteKind::ChangingRoom,
                SiteKind::Toilet
            ]
        );
    }

    #[test]
    fn no_alternative_credential_is_refused_citing_art_10() {
        let mut raw = example();
        raw.alternatives = RawAlternatives::default();
        let err = PolicyConfig::from_raw(raw).unwrap_err();
        assert!(matches!(err, PolicyError::NoAlternativeCredential));
        assert!(err.to_string().contains("Art. 10"));
        for i in 0..4 {
            let mut raw = example();
            raw.alternatives = RawAlternatives {
                pin: i == 0,
                card: i == 1,
                qr: i == 2,
                operator_override: i == 3,
                credential_days: None,
            };
            assert!(
                PolicyConfig::from_raw(raw).is_ok(),
                "alternative {i} alone suffices"
            );
        }
    }

    #[test]
    fn debug_capture_is_refused_in_production_only() {
        let mut raw = example();
        raw.deployment.debug_image_capture = true;
        let err = PolicyConfig::from_raw(raw.clone()).unwrap_err();
        assert!(matches!(err, PolicyError::DebugCaptureInProduction));
        assert!(err.to_string().contains("Art. 4"));
        raw.deployment.mode = Mode::Development;
        let c = PolicyConfig::from_raw(raw).unwrap();
        assert!(c.deployment().debug_image_capture());
    }

    #[test]
    fn empty_deployment_fields_are_refused() {
        for which in 0..3 {
            let mut raw = example();
            match which {
                0 => raw.deployment.processor_name = "  ".into(),
                1 => raw.deployment.processor_contact = String::new(),
                _ => raw.deployment.site_name = String::new(),
            }
            let err = PolicyConfig::from_raw(raw).unwrap_err();
            assert!(matches!(err, PolicyError::InvalidConfig { .. }), "{err}");
        }
    }

    #[test]
    fn empty_or_incomplete_notice_is_refused() {
        let mut raw = example();
        raw.notice.texts.clear();
        let err = PolicyConfig::from_raw(raw).unwrap_err();
        assert!(matches!(err, PolicyError::NoticeIncomplete { .. }));
        assert!(err.to_string().contains("Art. 5"), "{err}");

        let mut raw = example();
        raw.notice.texts.insert("zh-CN".into(), "   ".into());
        assert!(matches!(
            PolicyConfig::from_raw(raw).unwrap_err(),
            PolicyError::NoticeIncomplete { .. }
        ));

        let mut raw = example();
        raw.notice.version = 0;
        assert!(matches!(
            PolicyConfig::from_raw(raw).unwrap_err(),
            PolicyError::NoticeIncomplete {
                field: "[notice].version",
                ..
            }
        ));

        let mut raw = example();
        raw.notice.signage = String::new();
        assert!(matches!(
            PolicyConfig::from_raw(raw).unwrap_err(),
            PolicyError::NoticeIncomplete {
                field: "[notice].signage",
                ..
            }
        ));

        let mut raw = example();
        raw.notice.retention_statement = "\n".into();
        assert!(matches!(
            PolicyConfig::from_raw(raw).unwrap_err(),
            PolicyError::NoticeIncomplete {
                field: "[notice].retention_statement",
                ..
            }
        ));

        let mut raw = example();
        raw.notice.default_language = Some("fr".into());
        assert!(matches!(
            PolicyConfig::from_raw(raw).unwrap_err(),
            PolicyError::NoticeIncomplete {
                field: "[notice].default_language",
                ..
            }
        ));

        let mut raw = example();
        raw.notice.texts.insert("not a code".into(), "text".into());
        assert!(matches!(
            PolicyConfig::from_raw(raw).unwrap_err(),
            PolicyError::InvalidConfig {
                field: "[notice.texts]",
                ..
            }
        ));
    }

    #[test]
    fn notice_text_falls_back_to_default_language() {
        let mut raw = example();
        raw.notice.texts.insert("zh-CN".into(), "中文".into());
        raw.notice.default_language = Some("zh-CN".into());
        let c = PolicyConfig::from_raw(raw).unwrap();
        assert_eq!(c.notice().text("de"), "中文");
        assert!(c.notice().text("en").starts_with("This gate"));
    }

    #[test]
    fn retention_ranges_are_checked() {
        for (days, minor, sweep, ok) in [
            (365, Some(180), 60, true),
            (365, None, 60, true),
            (365, Some(365), 60, true),
            (0, None, 60, false),
            (MAX_RETENTION_DAYS + 1, None, 60, false),
            (30, Some(31), 60, false),
            (30, Some(0), 60, false),
            (30, None, 0, false),
            (30, None, 1441, false),
        ] {
            let mut raw = example();
            raw.retention = RawRetention {
                days,
                minor_days: minor,
                sweep_interval_minutes: sweep,
            };
            assert_eq!(
                PolicyConfig::from_raw(raw).is_ok(),
                ok,
                "{days} {minor:?} {sweep}"
            );
        }
    }

    #[test]
    fn minors_get_minor_days_adults_do_not() {
        let c = PolicyConfig::from_raw(example()).unwrap();
        assert_eq!(c.retention().days_for_age(8), 180);
        assert_eq!(c.retention().days_for_age(17), 180);
        assert_eq!(c.retention().days_for_age(18), 365);
    }

    #[test]
    fn bad_fmr_and_operating_points_are_refused() {
        let bad = [
            RawMatching {
                fmr: Some(0.0),
                ..example().matching
            },
            RawMatching {
                fmr: Some(-1e-4),
                ..example().matching
            },
            RawMatching {
                fmr: Some(0.5),
                ..example().matching
            },
            RawMatching {
                fmr: Some(f64::NAN),
                ..example().matching
            },
            RawMatching {
                fmr: Some(f64::INFINITY),
                ..example().matching
            },
            RawMatching {
                fmr: None,
                cosine_override: None,
                ..example().matching
            },
            RawMatching {
                cosine_override: Some(1.5),
                ..example().matching
            },
            RawMatching {
                cosine_override: Some(0.0),
                ..example().matching
            },
            RawMatching {
                margin: -0.1,
                ..example().matching
            },
            RawMatching {
                margin: f32::NAN,
                ..example().matching
            },
            RawMatching {
                frames_to_agree: 0,
                ..example().matching
            },
            RawMatching {
                frames_to_agree: 31,
                ..example().matching
            },
            RawMatching {
                fpir: Some(0.0),
                ..example().matching
            },
            RawMatching {
                fpir: Some(0.5),
                ..example().matching
            },
            RawMatching {
                fpir: Some(f64::NAN),
                ..example().matching
            },
        ];
        for m in bad {
            let mut raw = example();
            raw.matching = m.clone();
            let err = PolicyConfig::from_raw(raw).unwrap_err();
            assert!(
                matches!(err, PolicyError::InvalidOperatingPoint { .. }),
                "{m:?}"
            );
        }
        let m = MatchingPolicy::from_raw(RawMatching {
            fmr: None,
            cosine_override: Some(0.4),
            ..example().matching
        })
        .unwrap();
        assert_eq!(m.operating_point(), OperatingPoint::CosineOverride(0.4));
        let m = MatchingPolicy::from_raw(RawMatching {
            fpir: Some(1e-3),
            ..example().matching
        })
        .unwrap();
        assert_eq!(m.fpir(), Some(1e-3));
        assert_eq!(m.fmr(), Some(1e-4), "fmr stays for 1:1");
    }

    #[test]
    fn bad_warn_fraction_is_refused() {
        for f in [0.0, 1.0, -0.5, f64::NAN, 2.0] {
            let mut raw = example();
            raw.filing.warn_fraction = f;
            assert!(matches!(
                PolicyConfig::from_raw(raw).unwrap_err(),
                PolicyError::InvalidConfig {
                    field: "[filing].warn_fraction",
                    ..
                }
            ));
        }
    }

    #[test]
    fn notice_fingerprint_tracks_what_people_are_told() {
        let base = PolicyConfig::from_raw(example()).unwrap();
        let fp = base.notice_fingerprint();
        assert!(fp.starts_with("fnv1a64:") && fp.len() == 24, "{fp}");
        assert_eq!(
            fp,
            PolicyConfig::from_raw(example())
                .unwrap()
                .notice_fingerprint()
        );

        let mut raw = example();
        raw.retention.days = 30;
        raw.retention.minor_days = None;
        let changed = PolicyConfig::from_raw(raw).unwrap();
        assert_ne!(changed.notice_fingerprint(), fp);
        let err = changed.check_notice_change(1, &fp).unwrap_err();
        assert!(matches!(
            err,
            PolicyError::NoticeChangedWithoutVersionBump { version: 1 }
        ));

        assert_eq!(
            base.check_notice_change(1, &fp).unwrap(),
            NoticeChange::Unchanged
        );
        let mut raw = example();
        raw.notice.version = 2;
        raw.notice.signage = "new sign".into();
        let bumped = PolicyConfig::from_raw(raw).unwrap();
        assert_eq!(
            bumped.check_notice_change(1, &fp).unwrap(),
            NoticeChange::Bumped {
                previous: 1,
                current: 2
            }
        );
        assert!(matches!(
            base.check_notice_change(2, "x").unwrap_err(),
            PolicyError::NoticeVersionDecreased {
                previous: 2,
                current: 1
            }
        ));
    }

    #[test]
    fn purpose_method_fingerprint_is_readable_and_changes_with_method() {
        let base = PolicyConfig::from_raw(example()).unwrap();
        assert_eq!(
            base.purpose_method_fingerprint(),
            "purpose=access_control; site_kind=office_entrance; \
             storage=on_device_encrypted_templates; debug_image_capture=false; \
             retention_days=365; minor_retention_days=180; \
             alternatives=pin,card,operator_override; operating_point=fmr:1e-4"
        );
        let mut raw = example();
        raw.deployment.purpose = Purpose::Attendance;
        let other = PolicyConfig::from_raw(raw).unwrap();
        assert_ne!(
            other.purpose_method_fingerprint(),
            base.purpose_method_fingerprint()
        );
    }

    #[test]
    fn fnv1a_matches_reference_vector() {
        // FNV-1a 64 of "a" is af63dc4c8601ec8c; our field() adds length prefixes, so check the
        // raw writer.
        let mut h = Fnv1a::new();
        h.write(b"a");
        assert_eq!(h.finish(), "fnv1a64:af63dc4c8601ec8c");
    }
}
