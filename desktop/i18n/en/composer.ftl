# The text box under the timeline.

composer-label = Your message
composer-hint = Write a message… (Enter to send, Shift+Enter for a new line)
composer-send = Send
composer-sending = sending…
composer-retry = Send again
composer-edit = Edit
composer-closed = You are no longer in this conversation: you can read its history, but no longer write in it.
composer-size = { $bytes } / { $max } bytes
composer-error-too-long = This message is too long. Make it shorter or send it in parts.
composer-error-left = You are no longer in this conversation.
composer-error-too-many-pending = Too many messages are waiting to be sent. Wait, then try again.
error-send-not-connected = Not sent: Relais is not connected to the relay. Send it again once the connection is back.
error-send-interrupted = The connection broke while sending: the message may still go by itself once reconnected. Check with the recipient before sending it again.
