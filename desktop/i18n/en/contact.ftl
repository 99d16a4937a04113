# A contact's page: their devices, the safety number, its QR code, verification.

contact-title = { $contact }
contact-loading = Computing the safety number…
contact-safety-heading = Safety number
contact-devices-heading = Their devices
contact-device = Device { $key }
contact-safety-number-label = Safety number shared with { $contact }
contact-qr-label = QR code of the safety number shared with { $contact }
contact-compare-explained = Compare this number with the one { $contact } sees on their own screen, in person or on a call where you recognise their voice: if they are the same, nobody else can read what you write to each other.
contact-status-verified = Verified
contact-status-verified-detail = You compared this number with { $contact } and their devices have not changed since.
contact-status-unverified = Not verified
contact-status-unverified-detail = You have not compared this number with { $contact } yet.
contact-status-changed = No longer verified
contact-status-changed-detail = { $contact } added or removed a device since you verified them: compare the number again before you share anything sensitive.
contact-mark-verified = Mark as verified
contact-confirming = Saving…
contact-marked-verified = { $contact } is marked as verified.
contact-error-no-conversation = No conversation links you to { $contact } yet: write to them first, then come back to this page.
contact-error-changed = The number changed while you were comparing it: a device of { $contact } came or went. Compare the new number below.
contact-reload = Compute the number again
contact-field = Contact
contact-field-hint = first.last@ministry.gouv.fr
contact-show = Show their number
contact-choices = Your one-to-one conversations:
contact-choose-hint = Choose a contact to compare your safety number with them.
contact-error-yourself = A safety number is compared with someone else: choose a contact.
