# What several views share: the window, the toolbar, the connection, the errors.

app-name-short = Relais
window-title = Relais
window-title-unread = { $count ->
    [one] Relais (1 unread)
   *[other] Relais ({ $count } unread)
}
starting = Opening Relais…

page-conversation = Conversations
page-contact = Contact
page-devices = My devices
page-group = Group
page-search = Search
page-settings = Settings
toolbar-shortcut = Shortcut: Ctrl+{ $key }
conversation-none-open = Choose a conversation in the list, or start a new one.

connection-connecting = Connecting to the relay…
connection-connected = Connected
connection-disconnected = Connection lost
connection-reconnecting = Trying again in { $seconds } s
connection-ended = Session ended. Close Relais and open it again.
connection-ended-revoked = This device was revoked. Ask your administrator for a new enrollment link.
connection-ended-account = Your account is suspended or expired. Contact your administrator.
connection-ended-replaced = This device connected from elsewhere. Close the other Relais program, then reopen this one.

delivery-sent = sent
delivery-pending = waiting for the connection
delivery-failed = not sent

problem-dismiss = Dismiss

error-wrong-passphrase = Wrong passphrase. Check it (capitals, accents) and try again.
error-home-in-use = Another Relais program is already using this account (process { $pid }). Close it, then try again.
error-not-enrolled = No device is enrolled here. Enroll this device with your administrator's link.
error-session-ended = The session has ended. Close Relais and open it again.
error-relay-unreachable = The relay cannot be reached. Check your network connection, then try again.
error-user-no-device = { $user } has no enrolled device yet. Ask them to enroll one, then try again.
error-unverified = Not sent: { $user } changed devices since you verified them. Compare your safety numbers again.
error-request = The request did not go through. Try again; if it persists, tell your administrator.
error-protocol = The relay answered unexpectedly. Try again; if it goes on, tell your administrator.
error-local-storage = This computer's data cannot be read or written. Check the disk space, then reopen Relais.
error-enrollment-code = This enrollment link was already used or has expired. Ask your administrator for a new one.
error-device-revoked = This device was revoked. Ask your administrator for a new enrollment link.
error-account-closed = Your account is suspended or expired. Contact your administrator.
error-unknown-user = The relay does not know this user. Check the name (for example firstname.lastname).
error-slow-down = Too many messages at once. Wait a moment, then try again.
error-limit = The relay refuses this message: it exceeds a limit. Make it shorter.
error-not-admin = Only an admin of the group may do that.
error-replaced = This device connected from elsewhere. Close the other Relais program.
error-relay-failed = The relay is unavailable for the moment. Try again in a few minutes.
error-relay-refused = The relay refused the request.
error-internal = Relais could not start properly. Close it and open it again.
error-busy = Relais is very busy; the last action was not taken. Try again.
error-link-limit = Too many devices, or too many links waiting. Revoke an old device, or wait for a link to expire.
error-linking-disabled = Adding devices is turned off on this relay. Ask your administrator.
error-tls-certificate = The server's certificate is not valid for this address, or has expired. Tell your administrator.

library-warning = Relais reports:

# Dates and times, as the list, timelines and devices show them (numbers already padded with zeros).
time-of-day = { $hour }:{ $minute }
date-day = { $year }-{ $month }-{ $day }
date-and-time = { $date } { $time }
