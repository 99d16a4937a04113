# The welcome screen: enrolling this device with the administrator's link.

enroll-title = Welcome to Relais
enroll-intro = To begin, paste here the enrollment link your administrator sent you. It starts with "relais://".
enroll-link-label = Enrollment link
enroll-link-drop = Drop the link here
enroll-link-help = You can also drop the file that holds the link on this window. The link works once: do not pass it on to anyone.
enroll-passphrase-why = Choose a passphrase of at least { $min } characters. It protects your messages stored on this computer: without it, anyone with access to the computer can read them. Relais asks for it each time it opens; nobody can recover it if you forget it.
enroll-passphrase-label = Passphrase
enroll-confirm-label = Confirm the passphrase
enroll-without-passphrase = Do not protect this computer with a passphrase
enroll-without-passphrase-warning = Not recommended: your messages will be readable by anyone with access to this computer.
enroll-submit = Enroll this device
enroll-busy = Enrolling…
enroll-missing-link = Paste the enrollment link first.
enroll-error-not-a-link = This is not an enrollment link: it must start with "relais://". Copy it again from your administrator's message.
enroll-passphrase-short = The passphrase is too short.
enroll-passphrase-mismatch = The two passphrases are not the same.
enroll-drop-no-link = This file holds no enrollment link. Drop the file your administrator sent, or paste the link.
enroll-drop-not-a-file = This is not an ordinary file: drop the text file your administrator sent, or paste the link.
enroll-drop-too-large = This file is too large to hold just an enrollment link: drop the file your administrator sent, or paste the link.
enroll-drop-unreadable = This file cannot be read. Save it again on this computer and drop it, or paste the link.
enroll-error-link-altered = This enrollment link was altered: ask your administrator for a new one.
enroll-error-link-version = This enrollment link comes from a newer Relais. Update Relais, or ask your administrator for a link it can read.
enroll-error-link-malformed = This enrollment link is incomplete or was changed. Copy it again in full, or ask your administrator for a new one.
enroll-error-pin-mismatch = This link does not match the server reached: ask your administrator for a new link. Nothing was sent.
enroll-error-already-enrolled = A device is already enrolled in this folder. Open Relais as usual, or choose another folder.
