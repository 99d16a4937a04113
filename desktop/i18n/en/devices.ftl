# The "My devices" page: the list, revoking, and linking a new device.

devices-title = My devices
devices-loading = Loading your devices…
devices-refresh = Refresh the list
devices-this-device = This device
devices-device = Device { $id }
devices-key = Key { $key }
devices-enrolled = Enrolled: { $date }
devices-last-seen = Last connected: { $date }
devices-never-seen = Not connected since it was enrolled
devices-revoke = Revoke device { $id }
devices-revoke-title = Revoke device { $id }?
devices-revoke-body = It is disconnected at once, receives no more messages and is taken out of your conversations. This is final: to use it again, it must be enrolled again.
devices-revoke-confirm = Revoke
devices-cancel = Cancel
devices-revoking = Revoking…
devices-revoked = Device { $id } is revoked.
devices-link = Link a new device
devices-linking = Creating the link…
devices-link-heading = Link for your new device
devices-link-explained = On the new device, open Relais and scan this code or paste the link into it. It then receives the history of your conversations from this device: keep Relais open here until the copy is over.
devices-link-secret = This link is secret and works once: send it to nobody and paste it into no conversation. Whoever uses it becomes one of your devices.
devices-link-qr-label = QR code of the link for a new device
devices-link-field = Link for a new device
devices-link-copy = Copy the link
devices-link-copied = Link copied to the clipboard.
devices-link-hide = Hide the link
