//! The one conversion layer between contract versions.
//!
//! The daemon works with the current contract's types (`wit/v0.2`) only. A component built
//! against an older, frozen contract runs unchanged: its inputs are converted down to its version
//! before the call and its outputs up to the current version after it, here and nowhere else
//! (the way Zed converts older extension API versions in one module). What an old version cannot
//! express takes the value that means "not available": a v0.1 plugin declares no sync modes, and
//! its `sync` is refused as unsupported without entering guest code.
//!
//! Adding a version: bindgen it in `bindings.rs`, keep `v0_2` here as the old one, and write the
//! conversions of the types that changed; unchanged records keep their one-line `record!`.

use super::bindings::v0_1::stayhook::plugin::types as v1;
use super::bindings::v0_2::stayhook::plugin::types as v2;

/// A value of one contract version as the same value in another.
pub(crate) trait Convert<T> {
    fn convert(self) -> T;
}

macro_rules! identity {
    ($($ty:ty),*) => {$(
        impl Convert<$ty> for $ty {
            fn convert(self) -> $ty {
                self
            }
        }
    )*};
}
identity!(String, bool, u8, u16, u32, f64);

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<C>, B: Convert<D>, C, D> Convert<(C, D)> for (A, B) {
    fn convert(self) -> (C, D) {
        (self.0.convert(), self.1.convert())
    }
}

/// A record whose fields are the same in both versions: `record!(from => to: Name { fields })`.
macro_rules! record {
    ($from:ident => $to:ident : $name:ident { $($field:ident),* $(,)? }) => {
        impl Convert<$to::$name> for $from::$name {
            fn convert(self) -> $to::$name {
                $to::$name { $($field: self.$field.convert()),* }
            }
        }
    };
}

/// An enum whose cases are the same in both versions.
macro_rules! cases {
    ($from:ident => $to:ident : $name:ident { $($case:ident),* $(,)? }) => {
        impl Convert<$to::$name> for $from::$name {
            fn convert(self) -> $to::$name {
                match self {
                    $($from::$name::$case => $to::$name::$case),*
                }
            }
        }
    };
}

// ---- Up: what a v0.1 plugin returns, as v0.2 values. ----

record!(v1 => v2: Language { code, name });
record!(v1 => v2: PostalAddress { line1, postal_code, city, country });
record!(v1 => v2: GuestInfo { name, name_first, name_last, emails, mobile_numbers, preferred_language, address, pictures });
record!(v1 => v2: ReservationCodes { access_code, confirmation_code });
record!(v1 => v2: GuestVerification { is_identity_verified, is_email_verified, is_phone_verified, is_government_id_verified });
record!(v1 => v2: Charge { name, description, kind, units, total, is_mandatory });
record!(v1 => v2: ChargeGroup { total, breakdown });
record!(v1 => v2: Finances { total_price, currency, remaining_balance, payment_status, base_price, fee, tax, discount });
record!(v1 => v2: CustomField { id, name, kind, value, default_value });
cases!(v1 => v2: ReservationStatus { Confirmed, Pending, Inquiry, Cancelled, Declined, Expired, OwnerStay, Unknown });
record!(v1 => v2: Reservation {
    id, created_at, updated_at, cancelled_at, arrival_date, departure_date, nights, property_id, number_of_guests,
    primary_guest, number_of_adults, number_of_children, number_of_infants, number_of_pets, source, total_price, currency,
    status, arrival_estimated_time, departure_estimated_time, codes, notes, verification, finances, custom_fields,
});
cases!(v1 => v2: SenderType { Guest, Owner, System });
record!(v1 => v2: Attachment { url, name, mime_type });
record!(v1 => v2: Message { id, body, sender_type, created_at, updated_at, seen, attachments });
record!(v1 => v2: Recipient { name, email, phone, picture });
record!(v1 => v2: Conversation { id, reservation_ids, property_ids, kind, recipient, updated_at, messages });
cases!(v1 => v2: DayStatus { Available, NotAvailable });
record!(v1 => v2: CalendarDay { date, status, units_available, price, currency, minimum_nights, maximum_nights, reservation_ids });
record!(v1 => v2: Calendar { property_id, room_type_id, days });
cases!(v1 => v2: EventType { ReservationCreated, ReservationUpdated, ReservationDeleted, ConversationUpdated, CalendarUpdated });
record!(v1 => v2: Incomplete { event_type, record_id, reason });
record!(v1 => v2: ApiRequest { id, method, path, query, headers, body });
record!(v1 => v2: Oauth2Client { token_url, scope });
cases!(v1 => v2: SignatureEncoding { Hex, Base64 });
record!(v1 => v2: HmacHeader { header, encoding, prefix });
record!(v1 => v2: ApiInfo { base_url, allowed_hosts, auth });
cases!(v1 => v2: LogLevel { Debug, Info, Warn, Error });

impl Convert<v2::Event> for v1::Event {
    fn convert(self) -> v2::Event {
        match self {
            v1::Event::ReservationCreated(reservation) => v2::Event::ReservationCreated(reservation.convert()),
            v1::Event::ReservationUpdated(reservation) => v2::Event::ReservationUpdated(reservation.convert()),
            v1::Event::ReservationUpserted(reservation) => v2::Event::ReservationUpserted(reservation.convert()),
            v1::Event::ReservationDeleted(id) => v2::Event::ReservationDeleted(id),
            v1::Event::ConversationUpdated(conversation) => v2::Event::ConversationUpdated(conversation.convert()),
            v1::Event::CalendarUpdated(calendar) => v2::Event::CalendarUpdated(calendar.convert()),
            v1::Event::Incomplete(incomplete) => v2::Event::Incomplete(incomplete.convert()),
        }
    }
}

impl Convert<v2::Outcome> for v1::Outcome {
    fn convert(self) -> v2::Outcome {
        match self {
            v1::Outcome::Done(events) => v2::Outcome::Done(events.convert()),
            v1::Outcome::Fetch(requests) => v2::Outcome::Fetch(requests.convert()),
        }
    }
}

impl Convert<v2::PluginError> for v1::PluginError {
    fn convert(self) -> v2::PluginError {
        match self {
            v1::PluginError::BadPayload(message) => v2::PluginError::BadPayload(message),
            v1::PluginError::UnsupportedEvent(message) => v2::PluginError::UnsupportedEvent(message),
        }
    }
}

impl Convert<v2::AuthScheme> for v1::AuthScheme {
    fn convert(self) -> v2::AuthScheme {
        match self {
            v1::AuthScheme::None => v2::AuthScheme::None,
            v1::AuthScheme::ApiKeyHeader(header) => v2::AuthScheme::ApiKeyHeader(header),
            v1::AuthScheme::Bearer => v2::AuthScheme::Bearer,
            v1::AuthScheme::Basic => v2::AuthScheme::Basic,
            v1::AuthScheme::Oauth2ClientCredentials(client) => v2::AuthScheme::Oauth2ClientCredentials(client.convert()),
        }
    }
}

impl Convert<v2::VerificationScheme> for v1::VerificationScheme {
    fn convert(self) -> v2::VerificationScheme {
        match self {
            v1::VerificationScheme::None => v2::VerificationScheme::None,
            v1::VerificationScheme::BasicAuth => v2::VerificationScheme::BasicAuth,
            v1::VerificationScheme::HmacSha256(hmac) => v2::VerificationScheme::HmacSha256(hmac.convert()),
            v1::VerificationScheme::StandardWebhooks => v2::VerificationScheme::StandardWebhooks,
            v1::VerificationScheme::UrlToken(parameter) => v2::VerificationScheme::UrlToken(parameter),
            v1::VerificationScheme::HeaderToken(header) => v2::VerificationScheme::HeaderToken(header),
        }
    }
}

impl Convert<v2::PluginInfo> for v1::PluginInfo {
    fn convert(self) -> v2::PluginInfo {
        v2::PluginInfo {
            name: self.name,
            version: self.version,
            pms: self.pms,
            events: self.events,
            verification: self.verification.convert(),
            api: self.api.convert(),
            // v0.1 has no sync: reconciliation is not available for its accounts.
            sync_modes: Vec::new(),
        }
    }
}

impl Convert<v2::RegistrationStep> for v1::RegistrationStep {
    fn convert(self) -> v2::RegistrationStep {
        match self {
            v1::RegistrationStep::Manual(instructions) => v2::RegistrationStep::Manual(instructions),
            v1::RegistrationStep::Fetch(requests) => v2::RegistrationStep::Fetch(requests.convert()),
            v1::RegistrationStep::Done(values) => v2::RegistrationStep::Done(values),
        }
    }
}

impl<A: Convert<C>, B: Convert<D>, C, D> Convert<Result<C, D>> for Result<A, B> {
    fn convert(self) -> Result<C, D> {
        match self {
            Ok(value) => Ok(value.convert()),
            Err(error) => Err(error.convert()),
        }
    }
}

// ---- Down: what the host hands a v0.1 plugin, from v0.2 values. ----

record!(v2 => v1: AccountContext { id, workspace_id, settings });
record!(v2 => v1: Inbound { account, method, query, content_type, headers, body, received_at });
record!(v2 => v1: ApiResponse { id, status, headers, body, error });
cases!(v2 => v1: RegistrationAction { Register, Unregister });
record!(v2 => v1: RegistrationRequest { account, action, listener_url, registered, responses });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v0_1_reservation_event_comes_up_field_for_field() {
        let mut reservation = v1::Reservation {
            id: "r1".into(),
            created_at: Some("2024-01-01T00:00:00Z".into()),
            updated_at: None,
            cancelled_at: None,
            arrival_date: Some("2024-02-01".into()),
            departure_date: Some("2024-02-03".into()),
            nights: Some(2),
            property_id: Some("p1".into()),
            number_of_guests: Some(3),
            primary_guest: None,
            number_of_adults: None,
            number_of_children: None,
            number_of_infants: None,
            number_of_pets: None,
            source: Some("Airbnb".into()),
            total_price: Some(120.5),
            currency: Some("EUR".into()),
            status: v1::ReservationStatus::OwnerStay,
            arrival_estimated_time: None,
            departure_estimated_time: None,
            codes: v1::ReservationCodes { access_code: vec!["1234".into()], confirmation_code: None },
            notes: None,
            verification: v1::GuestVerification {
                is_identity_verified: Some(true),
                is_email_verified: None,
                is_phone_verified: None,
                is_government_id_verified: None,
            },
            finances: v1::Finances {
                total_price: None,
                currency: None,
                remaining_balance: None,
                payment_status: None,
                base_price: v1::ChargeGroup { total: Some(100.0), breakdown: Vec::new() },
                fee: v1::ChargeGroup { total: None, breakdown: Vec::new() },
                tax: v1::ChargeGroup { total: None, breakdown: Vec::new() },
                discount: v1::ChargeGroup { total: None, breakdown: Vec::new() },
            },
            custom_fields: Vec::new(),
        };
        reservation.primary_guest = Some(v1::GuestInfo {
            name: Some("Ada".into()),
            name_first: None,
            name_last: None,
            emails: vec!["ada@example.com".into()],
            mobile_numbers: Vec::new(),
            preferred_language: Some(v1::Language { code: "en".into(), name: None }),
            address: None,
            pictures: Vec::new(),
        });
        let up: v2::Outcome = v1::Outcome::Done(vec![v1::Event::ReservationUpserted(reservation)]).convert();
        let v2::Outcome::Done(events) = up else { panic!("done stays done") };
        let [v2::Event::ReservationUpserted(reservation)] = events.as_slice() else { panic!("one upsert") };
        assert_eq!(reservation.id, "r1");
        assert!(matches!(reservation.status, v2::ReservationStatus::OwnerStay));
        assert_eq!(reservation.codes.access_code, vec!["1234".to_string()]);
        assert_eq!(reservation.finances.base_price.total, Some(100.0));
        assert_eq!(
            reservation.primary_guest.as_ref().and_then(|guest| guest.preferred_language.as_ref()).map(|l| l.code.as_str()),
            Some("en")
        );
    }

    #[test]
    fn a_v0_1_plugin_info_declares_no_sync() {
        let info = v1::PluginInfo {
            name: "old".into(),
            version: "1.0.0".into(),
            pms: "Old".into(),
            events: Vec::new(),
            verification: v1::VerificationScheme::UrlToken("token".into()),
            api: None,
        };
        let info: v2::PluginInfo = info.convert();
        assert!(info.sync_modes.is_empty());
        assert!(matches!(info.verification, v2::VerificationScheme::UrlToken(ref name) if name == "token"));
    }
}
