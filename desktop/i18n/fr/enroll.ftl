# L'écran d'accueil : inscrire cet appareil avec le lien de l'administrateur.

enroll-title = Bienvenue dans Relais
enroll-intro = Pour commencer, collez ici le lien d'inscription que votre administrateur vous a envoyé. Il commence par « relais:// ».
enroll-link-label = Lien d'inscription
enroll-link-drop = Déposez le lien ici
enroll-link-help = Vous pouvez aussi déposer sur cette fenêtre le fichier qui contient le lien. Le lien ne sert qu'une fois : ne le transmettez à personne.
enroll-passphrase-why = Choisissez une phrase de passe d'au moins { $min } caractères. Elle protège vos messages enregistrés sur cet ordinateur : sans elle, quiconque accède à l'ordinateur peut les lire. Elle vous sera demandée à chaque ouverture de Relais ; personne ne pourra la retrouver si vous l'oubliez.
enroll-passphrase-label = Phrase de passe
enroll-confirm-label = Confirmez la phrase de passe
enroll-without-passphrase = Ne pas protéger cet ordinateur par une phrase de passe
enroll-without-passphrase-warning = Déconseillé : vos messages seront lisibles par toute personne ayant accès à cet ordinateur.
enroll-submit = Inscrire cet appareil
enroll-busy = Inscription en cours…
enroll-missing-link = Collez d'abord le lien d'inscription.
enroll-error-not-a-link = Ce n'est pas un lien d'inscription : il doit commencer par « relais:// ». Copiez-le à nouveau depuis le message de votre administrateur.
enroll-passphrase-short = La phrase de passe est trop courte.
enroll-passphrase-mismatch = Les deux phrases de passe ne sont pas identiques.
enroll-drop-no-link = Ce fichier ne contient pas de lien d'inscription. Déposez le fichier envoyé par votre administrateur, ou collez le lien.
enroll-drop-not-a-file = Ce n'est pas un fichier ordinaire : déposez le fichier texte envoyé par votre administrateur, ou collez le lien.
enroll-drop-too-large = Ce fichier est trop grand pour contenir seulement un lien d'inscription : déposez le fichier envoyé par votre administrateur, ou collez le lien.
enroll-drop-unreadable = Ce fichier ne peut pas être lu. Enregistrez-le à nouveau sur cet ordinateur puis déposez-le, ou collez le lien.
enroll-error-link-altered = Ce lien d'inscription a été modifié : demandez-en un nouveau à votre administrateur.
enroll-error-link-version = Ce lien d'inscription vient d'une version plus récente de Relais. Mettez Relais à jour, ou demandez un lien compatible à votre administrateur.
enroll-error-link-malformed = Ce lien d'inscription est incomplet ou a été modifié. Copiez-le à nouveau en entier, ou demandez-en un nouveau à votre administrateur.
enroll-error-pin-mismatch = Ce lien ne correspond pas au serveur joint : demandez un nouveau lien à votre administrateur. Rien n'a été envoyé.
enroll-error-already-enrolled = Un appareil est déjà inscrit dans ce dossier. Ouvrez Relais normalement, ou choisissez un autre dossier.
