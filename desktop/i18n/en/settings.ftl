# The settings page.

settings-title = Settings
settings-language = Language
settings-language-fr = Français
settings-language-en = English
settings-notifications-heading = Notifications
settings-notifications = Show a notification for each new message while the Relais window is not in front
settings-notification-text = Show the text of messages in notifications
settings-notification-text-hint = Off by default: a notification can show on a locked screen and be read by the people around you.
settings-trust-heading = Security
settings-require-verified = Send no message to a contact whose devices changed since you verified them
settings-require-verified-hint = Before sending, Relais then names those contacts: verify them again on their page, or send anyway knowing it. This setting is this device's, the relais command's included.
settings-require-verified-loading = Reading the setting…
settings-require-verified-retry = Read this setting again
settings-error-save = Your settings could not be saved: they apply until Relais closes. Check the free disk space and the permissions of the folder { $path }.
settings-bad-file-unreadable = The settings file { $path } cannot be read: the default settings apply. Check the file's permissions; it is written again as soon as you change a setting.
settings-bad-file-not-a-file = { $path } is not an ordinary file: the default settings apply. Remove or rename it; Relais creates it again as soon as you change a setting.
settings-bad-file-too-large = The settings file { $path } is far too large to be one: the default settings apply. It is written again as soon as you change a setting.
settings-bad-file-not-text = The settings file { $path } is not text: the default settings apply. It is written again as soon as you change a setting.
settings-bad-file-malformed = The settings file { $path } is malformed: the default settings apply. Correct it, or change a setting to have it written again.
settings-bad-file-language = The settings file { $path } asks for an unknown language, "{ $language }" (fr or en): the default settings apply. Choose the language below to write it again.
