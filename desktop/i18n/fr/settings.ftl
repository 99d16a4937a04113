# La page des réglages.

settings-title = Réglages
settings-language = Langue
settings-language-fr = Français
settings-language-en = English
settings-notifications-heading = Notifications
settings-notifications = Afficher une notification pour chaque nouveau message quand la fenêtre de Relais n'est pas au premier plan
settings-notification-text = Montrer le texte des messages dans les notifications
settings-notification-text-hint = Désactivé par défaut : une notification peut s'afficher sur un écran verrouillé et être lue par les personnes autour de vous.
settings-trust-heading = Sécurité
settings-require-verified = Ne pas envoyer de message à un contact dont les appareils ont changé depuis que vous l'avez vérifié
settings-require-verified-hint = Avant d'envoyer, Relais vous nomme alors ces contacts : vérifiez-les à nouveau sur leur page, ou envoyez quand même en connaissance de cause. Ce réglage vaut pour cet appareil, y compris pour la commande relais.
settings-require-verified-loading = Lecture du réglage…
settings-require-verified-retry = Lire à nouveau ce réglage
settings-error-save = Vos réglages n'ont pas pu être enregistrés : ils s'appliquent jusqu'à la fermeture de Relais. Vérifiez l'espace disque et les droits du dossier { $path }.
settings-bad-file-unreadable = Le fichier de réglages { $path } ne peut pas être lu : les réglages par défaut s'appliquent. Vérifiez les droits de ce fichier ; il sera réécrit dès que vous changerez un réglage.
settings-bad-file-not-a-file = { $path } n'est pas un fichier ordinaire : les réglages par défaut s'appliquent. Supprimez-le ou renommez-le ; Relais le recréera dès que vous changerez un réglage.
settings-bad-file-too-large = Le fichier de réglages { $path } est bien trop grand pour en être un : les réglages par défaut s'appliquent. Il sera réécrit dès que vous changerez un réglage.
settings-bad-file-not-text = Le fichier de réglages { $path } n'est pas du texte : les réglages par défaut s'appliquent. Il sera réécrit dès que vous changerez un réglage.
settings-bad-file-malformed = Le fichier de réglages { $path } est mal formé : les réglages par défaut s'appliquent. Corrigez-le, ou changez un réglage pour qu'il soit réécrit.
settings-bad-file-language = Le fichier de réglages { $path } demande une langue inconnue, « { $language } » (fr ou en) : les réglages par défaut s'appliquent. Choisissez la langue ci-dessous pour le réécrire.
