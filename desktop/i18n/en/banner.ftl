# A conversation's "new device" banner, and the confirmation before sending.

banner-new-device = { $contact } has a new device. Verify their safety number.
banner-changed-devices = { $contact }'s devices changed since you verified them. Verify their safety number.
banner-open-contact = Verify { $contact }
banner-confirm-title = Send anyway?
banner-confirm-body = { $count ->
    [one] { $contacts } changed devices since you verified them: your message could be read on a device you have not verified.
   *[other] { $contacts } changed devices since you verified them: your message could be read on devices you have not verified.
}
banner-confirm-send = Send anyway
banner-confirm-cancel = Do not send
banner-checking = Checking your contacts' devices before sending…
