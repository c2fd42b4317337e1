//! PullPoint subscriptions (ONVIF Core §9.1): CreatePullPointSubscription, PullMessages,
//! Renew, SetSynchronizationPoint and Unsubscribe, and [`Lifecycle`], the pure decision of
//! when to pull, renew or give a subscription up, driven by the injected clock.

use std::time::Duration;

use super::client::{CALL_TIMEOUT, Client, OnvifError};
use super::device::rebase;
use super::soap::{self, CONCRETE_SET, SoapError, TEV, WSA, WSNT, escape};
use crate::event::Event;
use crate::sources::limits::LimitError;
use crate::sources::rtsp::onvif::{Context, notification};

const TEV_ACTION: &str = "http://www.onvif.org/ver10/events/wsdl/";
const WSNT_ACTION: &str = "http://docs.oasis-open.org/wsn/bw-2/";

/// How long a subscription is asked to live; renewed at half of what the camera grants.
pub const SUBSCRIPTION_TIME: Duration = Duration::from_secs(60);
/// The `Timeout` of a PullMessages long poll: the camera answers at once when it has messages.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to [`PULL_TIMEOUT`] for the HTTP deadline of a PullMessages request: a reply later
/// than that is a hung camera (the deadline stays within sources::limits' 10 s).
pub const PULL_MARGIN: Duration = Duration::from_secs(5);
/// Most notifications asked for per PullMessages.
pub const MESSAGE_LIMIT: u32 = 64;

/// A live subscription on the camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its manager's address (where Pull, Renew and Unsubscribe go), rebased on our host.
    pub address: url::Url,
    /// The address as the camera wrote it (`wsa:To`).
    pub to: String,
    /// `wsa:ReferenceParameters` of the reference (some devices put the subscription id
    /// there), as SOAP headers to echo on every request to it.
    pub reference_headers: String,
    /// `wsnt:CurrentTime` of the reply, camera clock, epoch ms.
    pub current_ms: i64,
    /// `wsnt:TerminationTime`, camera clock, epoch ms.
    pub termination_ms: i64,
}

/// What the loop does next with a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Long-poll for messages, for at most this long (renewal comes due after it).
    Pull(Duration),
    /// Renew it now.
    Renew,
    /// It expired (renewals failed or the loop stalled): unsubscribe and subscribe again.
    Resubscribe,
}

/// When to renew a subscription, as a pure function of the relay's clock: renew at half of
/// the lifetime the camera granted (a minute's subscription is renewed every 30 s, leaving
/// three more PullMessages' worth of slack), give up at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    renew_at_ms: i64,
    expires_at_ms: i64,
}

impl Lifecycle {
    /// A subscription granted at `now_ms` (relay clock) for `termination - current` (camera
    /// clock: the difference needs no offset).
    pub fn new(now_ms: i64, current_ms: i64, termination_ms: i64) -> Self {
        let lifetime = (termination_ms - current_ms).max(1000);
        Self {
            renew_at_ms: now_ms + lifetime / 2,
            expires_at_ms: now_ms + lifetime,
        }
    }

    /// After a successful Renew: the same rule from the new termination time.
    pub fn renewed(&mut self, now_ms: i64, current_ms: i64, termination_ms: i64) {
        *self = Self::new(now_ms, current_ms, termination_ms);
    }

    /// What to do at `now_ms`.
    pub fn next(&self, now_ms: i64) -> Step {
        if now_ms >= self.expires_at_ms {
            Step::Resubscribe
        } else if now_ms >= self.renew_at_ms {
            Step::Renew
        } else {
            let until_renew = Duration::from_millis((self.renew_at_ms - now_ms) as u64);
            Step::Pull(until_renew.max(Duration::from_secs(1)).min(PULL_TIMEOUT))
        }
    }
}

/// Whether to send Unsubscribe for a subscription ended by `e` before subscribing again:
/// always, except when the camera said it no longer knows it.
pub fn unsubscribe_after(e: &OnvifError) -> bool {
    !matches!(e, OnvifError::Soap(s) if s.is_resource_unknown())
}

/// `PT5S` for a whole number of seconds (at least one).
pub fn xsd_duration(d: Duration) -> String {
    format!("PT{}S", d.as_secs().max(1))
}

/// The topic filter of a CreatePullPointSubscription for the rules' camera filters, `None`
/// when they take everything (`//.`).
pub fn topic_filter(camera_filters: &[String]) -> Option<String> {
    if camera_filters.is_empty() || camera_filters.iter().any(|f| f == "//.") {
        return None;
    }
    Some(format!(
        r#"<tev:Filter><wsnt:TopicExpression Dialect="{CONCRETE_SET}" xmlns:tnsaxis="http://www.axis.com/2009/event/topics">{}</wsnt:TopicExpression></tev:Filter>"#,
        escape(&camera_filters.join("|"))
    ))
}

fn time(node: roxmltree::Node, ns: &str, name: &str) -> Result<i64, SoapError> {
    soap::text_of(node, ns, name)
        .and_then(crate::time::parse_rfc3339_ms)
        .ok_or_else(|| SoapError::Malformed(format!("no usable {name}")))
}

/// A CreatePullPointSubscription reply.
pub fn parse_created(text: &str, device: &url::Url) -> Result<Subscription, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TEV, "CreatePullPointSubscriptionResponse")?;
    let to = soap::child(b, TEV, "SubscriptionReference")
        .and_then(|r| soap::text_of(r, WSA, "Address"))
        .ok_or_else(|| SoapError::Malformed("no SubscriptionReference/Address".into()))?
        .to_string();
    let reference_headers = soap::child(b, TEV, "SubscriptionReference")
        .and_then(|r| soap::child(r, WSA, "ReferenceParameters"))
        .map(reference_parameters)
        .unwrap_or_default();
    Ok(Subscription {
        address: rebase(device, &to)?,
        to,
        reference_headers,
        current_ms: time(b, WSNT, "CurrentTime")?,
        termination_ms: time(b, WSNT, "TerminationTime")?,
    })
}

/// The text-only children of `wsa:ReferenceParameters` as headers marked
/// `wsa:IsReferenceParameter` (WS-Addressing 1.0 §3.3), each with its namespace declared on it.
fn reference_parameters(params: roxmltree::Node) -> String {
    let mut out = String::new();
    for (i, p) in soap::elements(params).take(8).enumerate() {
        let local = p.tag_name().name();
        let text = escape(p.text().unwrap_or("").trim());
        match p.tag_name().namespace() {
            Some(ns) => out.push_str(&format!(
                r#"<rp{i}:{local} xmlns:rp{i}="{}" wsa:IsReferenceParameter="true">{text}</rp{i}:{local}>"#,
                escape(ns)
            )),
            None => out.push_str(&format!(
                r#"<{local} wsa:IsReferenceParameter="true">{text}</{local}>"#
            )),
        }
    }
    out
}

/// A Renew reply: (current, termination), camera clock.
pub fn parse_renewed(text: &str) -> Result<(i64, i64), SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, WSNT, "RenewResponse")?;
    Ok((
        time(b, WSNT, "CurrentTime")?,
        time(b, WSNT, "TerminationTime")?,
    ))
}

/// A PullMessages reply: its events appended to `out` in order; the first notification
/// refused by the limits, if any (the others are kept).
pub fn parse_messages(
    text: &str,
    ctx: &Context,
    out: &mut Vec<Event>,
) -> Result<Option<LimitError>, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TEV, "PullMessagesResponse")?;
    let mut refused = None;
    for n in soap::elements(b).filter(|n| soap::is(*n, WSNT, "NotificationMessage")) {
        match notification(n, ctx) {
            Ok(ev) => out.extend(ev),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    Ok(refused)
}

impl Client {
    /// CreatePullPointSubscription with an optional topic filter.
    pub async fn create_pull_point(
        &self,
        events: &url::Url,
        filter: Option<&str>,
    ) -> Result<Subscription, OnvifError> {
        let body = format!(
            "<tev:CreatePullPointSubscription>{}<tev:InitialTerminationTime>{}</tev:InitialTerminationTime></tev:CreatePullPointSubscription>",
            filter.unwrap_or(""),
            xsd_duration(SUBSCRIPTION_TIME)
        );
        let action = format!("{TEV_ACTION}EventPortType/CreatePullPointSubscriptionRequest");
        let header = soap::addressing(&action, events.as_str());
        let reply = self
            .call(events, &action, &header, &body, true, CALL_TIMEOUT)
            .await?;
        Ok(parse_created(&reply, events)?)
    }

    async fn to_subscription(
        &self,
        sub: &Subscription,
        action: &str,
        body: &str,
        deadline: Duration,
    ) -> Result<String, OnvifError> {
        let header = format!(
            "{}{}",
            soap::addressing(action, &sub.to),
            sub.reference_headers
        );
        self.call(&sub.address, action, &header, body, true, deadline)
            .await
    }

    /// One long poll of at most `timeout`; the HTTP deadline is that plus [`PULL_MARGIN`].
    pub async fn pull_messages(
        &self,
        sub: &Subscription,
        timeout: Duration,
        ctx: &Context,
        out: &mut Vec<Event>,
    ) -> Result<Option<LimitError>, OnvifError> {
        let body = format!(
            "<tev:PullMessages><tev:Timeout>{}</tev:Timeout><tev:MessageLimit>{MESSAGE_LIMIT}</tev:MessageLimit></tev:PullMessages>",
            xsd_duration(timeout)
        );
        let action = format!("{TEV_ACTION}PullPointSubscription/PullMessagesRequest");
        let reply = self
            .to_subscription(sub, &action, &body, timeout + PULL_MARGIN)
            .await?;
        Ok(parse_messages(&reply, ctx, out)?)
    }

    /// Renew for another [`SUBSCRIPTION_TIME`]: (current, termination), camera clock.
    pub async fn renew(&self, sub: &Subscription) -> Result<(i64, i64), OnvifError> {
        let body = format!(
            "<wsnt:Renew><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:Renew>",
            xsd_duration(SUBSCRIPTION_TIME)
        );
        let action = format!("{WSNT_ACTION}SubscriptionManager/RenewRequest");
        let reply = self
            .to_subscription(sub, &action, &body, CALL_TIMEOUT)
            .await?;
        Ok(parse_renewed(&reply)?)
    }

    /// Asks for the current state of every stateful topic (`PropertyOperation="Initialized"`).
    pub async fn set_synchronization_point(&self, sub: &Subscription) -> Result<(), OnvifError> {
        let action = format!("{TEV_ACTION}PullPointSubscription/SetSynchronizationPointRequest");
        let reply = self
            .to_subscription(sub, &action, "<tev:SetSynchronizationPoint/>", CALL_TIMEOUT)
            .await?;
        let doc = soap::parse(&reply)?;
        soap::expect(&doc, TEV, "SetSynchronizationPointResponse")?;
        Ok(())
    }

    /// Ends the subscription on the camera, freeing its slot.
    pub async fn unsubscribe(
        &self,
        sub: &Subscription,
        deadline: Duration,
    ) -> Result<(), OnvifError> {
        let action = format!("{WSNT_ACTION}SubscriptionManager/UnsubscribeRequest");
        let reply = self
            .to_subscription(sub, &action, "<wsnt:Unsubscribe/>", deadline)
            .await?;
        let doc = soap::parse(&reply)?;
        soap::expect(&doc, WSNT, "UnsubscribeResponse")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn renews_at_half_life_and_resubscribes_once_expired() {
        let clock = ManualClock::new(1_000_000);
        // Camera clock an hour ahead; lifetime 60 s.
        let cam = 1_000_000 + 3_600_000;
        let mut l = Lifecycle::new(clock.now_ms(), cam, cam + 60_000);
        assert_eq!(l.next(clock.now_ms()), Step::Pull(PULL_TIMEOUT));
        clock.advance(28_000);
        assert_eq!(l.next(clock.now_ms()), Step::Pull(Duration::from_secs(2)));
        clock.advance(1_800);
        assert_eq!(
            l.next(clock.now_ms()),
            Step::Pull(Duration::from_secs(1)),
            "never a zero-second poll"
        );
        clock.advance(200);
        assert_eq!(l.next(clock.now_ms()), Step::Renew);
        l.renewed(clock.now_ms(), cam + 30_000, cam + 90_000);
        assert_eq!(l.next(clock.now_ms()), Step::Pull(PULL_TIMEOUT));
        // Renewals failing (or the loop stalled) past the end: a new subscription.
        clock.advance(60_000);
        assert_eq!(l.next(clock.now_ms()), Step::Resubscribe);
    }

    #[test]
    fn a_zero_or_backwards_lifetime_still_leaves_a_second() {
        let l = Lifecycle::new(0, 5_000, 5_000);
        assert_eq!(l.next(0), Step::Pull(Duration::from_secs(1)));
        assert_eq!(l.next(500), Step::Renew);
        assert_eq!(l.next(1000), Step::Resubscribe);
    }

    #[test]
    fn unsubscribe_unless_the_camera_forgot_the_subscription() {
        let gone = OnvifError::Soap(SoapError::Fault {
            code: "Sender".into(),
            subcode: "ResourceUnknownFault".into(),
            reason: String::new(),
        });
        assert!(!unsubscribe_after(&gone));
        assert!(unsubscribe_after(&OnvifError::Timeout(
            Duration::from_secs(10),
            "PullMessagesRequest".into()
        )));
    }

    #[test]
    fn filters_join_concrete_topics_and_take_all_means_none() {
        assert_eq!(topic_filter(&["//.".into()]), None);
        let f = topic_filter(&[
            "tns1:RuleEngine//.".into(),
            "tns1:Device/Trigger/DigitalInput".into(),
        ])
        .unwrap();
        assert!(
            f.contains(">tns1:RuleEngine//.|tns1:Device/Trigger/DigitalInput<"),
            "{f}"
        );
    }

    /// Network input never panics: every prefix of real replies, and replies with their
    /// elements swapped between operations, are errors or partial results.
    #[test]
    fn truncated_and_mismatched_replies_are_errors_not_panics() {
        let dev = url::Url::parse("http://127.0.0.1:9/").unwrap();
        let ctx = Context {
            camera: "cam".into(),
            serial: "SN".into(),
            now_ms: 0,
        };
        let replies = [
            soap::envelope(
                "",
                "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>http://h/s</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>2026-01-01T00:00:00Z</wsnt:CurrentTime><wsnt:TerminationTime>bogus</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
            ),
            soap::envelope(
                "",
                r#"<tev:PullMessagesResponse><wsnt:NotificationMessage><wsnt:Topic>tns1:A/B</wsnt:Topic><wsnt:Message><tt:Message UtcTime="x" PropertyOperation="?"><tt:Data><tt:SimpleItem Name="n"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage></tev:PullMessagesResponse>"#,
            ),
            soap::envelope(
                "",
                "<wsnt:RenewResponse><wsnt:TerminationTime>2026-13-01T00:00:00Z</wsnt:TerminationTime></wsnt:RenewResponse>",
            ),
        ];
        for r in &replies {
            for end in (0..=r.len()).filter(|&i| r.is_char_boundary(i)) {
                let t = &r[..end];
                let _ = parse_created(t, &dev);
                let _ = parse_renewed(t);
                let _ = parse_messages(t, &ctx, &mut Vec::new());
                let _ = crate::sources::onvif::device::parse_system_time(t);
                let _ = crate::sources::onvif::device::parse_device_information(t);
                let _ = crate::sources::onvif::media::parse_stream_uri(t);
            }
        }
        assert!(
            parse_created(&replies[0], &dev).is_err(),
            "bogus TerminationTime"
        );
        let mut out = Vec::new();
        assert_eq!(parse_messages(&replies[1], &ctx, &mut out), Ok(None));
        assert_eq!(
            out[0].operation, None,
            "an unknown operation is not guessed"
        );
        assert!(parse_renewed(&replies[2]).is_err());
    }

    #[test]
    fn created_and_pulled_replies_parse() {
        let dev = url::Url::parse("http://127.0.0.1:9/onvif/device_service").unwrap();
        let c = soap::envelope(
            "",
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>http://10.1.1.1/onvif/subscription?id=3</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>2026-01-01T00:00:00Z</wsnt:CurrentTime><wsnt:TerminationTime>2026-01-01T00:01:00Z</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
        );
        let s = parse_created(&c, &dev).unwrap();
        assert_eq!(
            s.address.as_str(),
            "http://127.0.0.1:9/onvif/subscription?id=3"
        );
        assert_eq!(s.termination_ms - s.current_ms, 60_000);
        assert_eq!(s.reference_headers, "");
        // A device that names the subscription in ReferenceParameters gets it echoed as a header.
        let with_ref = c.replace(
            "</wsa:Address>",
            r#"</wsa:Address><wsa:ReferenceParameters><dom0:SubscriptionId xmlns:dom0="http://www.axis.com/2009/event">7</dom0:SubscriptionId></wsa:ReferenceParameters>"#,
        );
        let r = parse_created(&with_ref, &dev).unwrap();
        assert_eq!(
            r.reference_headers,
            r#"<rp0:SubscriptionId xmlns:rp0="http://www.axis.com/2009/event" wsa:IsReferenceParameter="true">7</rp0:SubscriptionId>"#
        );
        let header = format!("{}{}", soap::addressing("a", "b"), r.reference_headers);
        let doc_text = soap::envelope(&header, "<tev:PullMessages/>");
        let doc = soap::parse(&doc_text).unwrap();
        assert!(
            soap::descendant(
                doc.root_element(),
                "http://www.axis.com/2009/event",
                "SubscriptionId"
            )
            .is_some()
        );
        let p = soap::envelope(
            "",
            r#"<tev:PullMessagesResponse><tev:CurrentTime>2026-01-01T00:00:00Z</tev:CurrentTime><tev:TerminationTime>2026-01-01T00:01:00Z</tev:TerminationTime><wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:VideoSource/MotionAlarm</wsnt:Topic><wsnt:Message><tt:Message UtcTime="2026-01-01T00:00:00Z" PropertyOperation="Initialized"><tt:Source><tt:SimpleItem Name="Source" Value="VideoSourceToken"/></tt:Source><tt:Data><tt:SimpleItem Name="State" Value="false"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage></tev:PullMessagesResponse>"#,
        );
        let ctx = Context {
            camera: "cam".into(),
            serial: "SN".into(),
            now_ms: 0,
        };
        let mut out = Vec::new();
        assert_eq!(parse_messages(&p, &ctx, &mut out), Ok(None));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "tns1:VideoSource/MotionAlarm");
        assert!(out[0].stateful);
        assert_eq!(out[0].data.get("State").map(String::as_str), Some("false"));
    }
}
